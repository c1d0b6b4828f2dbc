"""Messages: send, mark as read, history. Every rule about messages lives here.

Each action writes, commits, and only then publishes its event, so REST and the WebSocket (which both
call these functions) cannot drift apart, and no client hears of anything the database does not hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NamedTuple

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy import Integer, and_, bindparam, case, exists, func, select, update
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.events import EventBus
from windi_chat.models import Chat, ChatMember, Message, utcnow
from windi_chat.schemas import MAX_TEXT_LENGTH, MessageOut, ReadIn, ReadOut, SendMessageIn
from windi_chat.security import CurrentUser

__all__ = (
    "InvalidMessageError",
    "MessageController",
    "NotMemberError",
    "can_read",
    "history",
    "mark_read",
    "message_out",
    "messages_after",
    "send_message",
)

logger = logging.getLogger("windi_chat.messaging")

MAX_PAGE = 200


class NotMemberError(NotFoundException):
    """The chat does not exist or the caller is not in it: the same answer, so ids cannot be probed."""

    detail = "Chat not found"


class InvalidMessageError(ClientException):
    """The message breaks a rule the schema alone cannot state (the length after trimming)."""


def message_out(message: Message | Any, all_read_seq: int) -> MessageOut:
    """The wire form; ``read`` means every member's marker has reached this message."""
    return MessageOut(
        id=message.id,
        chat_id=message.chat_id,
        seq=message.seq,
        sender_id=message.sender_id,
        text=message.text,
        timestamp=message.created_at,
        client_id=message.client_id,
        read=message.seq <= all_read_seq,
    )


@dataclass(frozen=True, slots=True)
class Sent:
    message: MessageOut
    created: bool  # False: the client id was used before and this is the original message


def clean_text(text: str) -> str:
    trimmed = text.strip()
    if not 1 <= len(trimmed) <= MAX_TEXT_LENGTH:
        raise InvalidMessageError(f"text must hold 1 to {MAX_TEXT_LENGTH} characters after trimming")
    return trimmed


async def send_message(
    session: AsyncSession, events: EventBus, chat_id: int, sender_id: int, client_id: str, text: str
) -> Sent:
    """Store a message once per (chat, sender, client id) and deliver it to every socket of the chat.

    The seq comes from bumping the chat's counter in the same transaction as the insert: the row lock
    orders concurrent senders, so seqs are gap-free. A repeated client id inserts nothing (the unique
    constraint settles parallel repeats), rolls the counter back, and returns the original. Sending also
    moves the sender's read marker to the new message.
    """
    text = clean_text(text)
    now = utcnow()
    store = _store_postgres if session.get_bind().dialect.name == "postgresql" else _store_portable
    stored = await store(session, chat_id, sender_id, client_id, text, now)
    if stored.seq is None:
        await session.rollback()
        raise NotMemberError
    if stored.message_id is None:
        await session.rollback()
        return Sent(await _original(session, chat_id, sender_id, client_id), created=False)
    await session.commit()
    seq, others_read, sender_read_before = stored.seq, stored.others_read, stored.sender_read_before
    all_read_before = sender_read_before if others_read is None else min(sender_read_before, others_read)
    all_read_seq = seq if others_read is None else min(seq, others_read)
    message = MessageOut(
        id=stored.message_id,
        chat_id=chat_id,
        seq=seq,
        sender_id=sender_id,
        text=text,
        timestamp=now,
        client_id=client_id,
        read=seq <= all_read_seq,
    )
    logger.debug("Message stored: chat_id=%s seq=%s sender_id=%s", chat_id, seq, sender_id)
    events.message(message)
    if all_read_seq > all_read_before:
        # The sender was the last to read the earlier messages: sending read them, so say so.
        events.read(chat_id, sender_id, seq, all_read_seq)
    return Sent(message, created=True)


class _Stored(NamedTuple):
    seq: int | None  # None: the sender is not a member
    message_id: int | None  # None: the client id was used before; nothing was inserted
    others_read: int | None  # the lowest marker of the other members (None: nobody else)
    sender_read_before: int


# The hot path on PostgreSQL: bump the counter, insert and move the sender's marker in one statement,
# built once.
_SEND_POSTGRES = sql(
    """
    WITH member AS (
        SELECT read_seq FROM chat_members WHERE chat_id = :chat_id AND user_id = :sender_id
    ), bumped AS (
        UPDATE chats SET last_seq = last_seq + 1, last_activity_at = :now
        WHERE id = :chat_id AND EXISTS (SELECT 1 FROM member)
        RETURNING last_seq
    ), inserted AS (
        INSERT INTO messages (chat_id, seq, sender_id, client_id, text, created_at)
        SELECT :chat_id, last_seq, :sender_id, :client_id, :text, :now FROM bumped
        ON CONFLICT (chat_id, sender_id, client_id) DO NOTHING
        RETURNING id, seq
    ), marked AS (
        UPDATE chat_members SET read_seq = inserted.seq FROM inserted
        WHERE chat_members.chat_id = :chat_id AND chat_members.user_id = :sender_id
    )
    SELECT (SELECT last_seq FROM bumped), (SELECT id FROM inserted), (SELECT read_seq FROM member)
    """
)
# The statement above reads the members' rows as they were when it started, possibly before it waited
# for the chat row's lock. Every marker or membership change takes that lock first, so reading again
# now that it is held sees them exactly: a member removed meanwhile sends nothing, and the read event
# of a send is computed from the true markers.
_AFTER_LOCK_POSTGRES = sql(
    """
    SELECT EXISTS (SELECT 1 FROM chat_members WHERE chat_id = :chat_id AND user_id = :sender_id),
        (SELECT min(read_seq) FROM chat_members WHERE chat_id = :chat_id AND user_id <> :sender_id)
    """
)


async def _store_postgres(
    session: AsyncSession, chat_id: int, sender_id: int, client_id: str, text: str, now: datetime
) -> _Stored:
    parameters = {
        "chat_id": chat_id,
        "sender_id": sender_id,
        "client_id": client_id,
        "text": text,
        "now": now,
    }
    seq, message_id, sender_read = (await session.execute(_SEND_POSTGRES, parameters)).one()
    if message_id is None:
        return _Stored(seq, None, None, 0)
    still_member, others_read = (await session.execute(_AFTER_LOCK_POSTGRES, parameters)).one()
    if not still_member:
        return _Stored(None, None, None, 0)
    return _Stored(seq, message_id, others_read, sender_read or 0)


async def _store_portable(
    session: AsyncSession, chat_id: int, sender_id: int, client_id: str, text: str, now: datetime
) -> _Stored:
    """The same steps as ``_SEND_POSTGRES``, one statement each (SQLite has no data-changing CTEs)."""
    is_member = exists().where(ChatMember.chat_id == chat_id, ChatMember.user_id == sender_id)
    others_min_read = (
        select(func.min(ChatMember.read_seq))
        .where(ChatMember.chat_id == chat_id, ChatMember.user_id != sender_id)
        .scalar_subquery()
    )
    sender_read = (
        select(ChatMember.read_seq)
        .where(ChatMember.chat_id == chat_id, ChatMember.user_id == sender_id)
        .scalar_subquery()
    )
    bumped = (
        await session.execute(
            update(Chat.__table__)
            .where(Chat.id == chat_id, is_member)
            .values(last_seq=Chat.last_seq + 1, last_activity_at=now)
            .returning(Chat.last_seq, others_min_read, sender_read)
        )
    ).one_or_none()
    if bumped is None:
        return _Stored(None, None, None, 0)
    seq, others_read, sender_read_before = bumped
    insert_message = _insert_ignoring_repeats(session).values(
        chat_id=chat_id, seq=seq, sender_id=sender_id, client_id=client_id, text=text, created_at=now
    )
    message_id = (await session.execute(insert_message.returning(Message.id))).scalar_one_or_none()
    if message_id is not None:
        await session.execute(
            update(ChatMember.__table__)
            .where(ChatMember.chat_id == chat_id, ChatMember.user_id == sender_id)
            .values(read_seq=seq)
        )
    return _Stored(seq, message_id, others_read, sender_read_before)


def _insert_ignoring_repeats(session: AsyncSession) -> Any:
    """``INSERT ... ON CONFLICT (chat, sender, client id) DO NOTHING`` in the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(Message).on_conflict_do_nothing(
        index_elements=[Message.chat_id, Message.sender_id, Message.client_id]
    )


# The lowest marker of the chat's members, as a column of a message query: every message with a seq
# at or below it has been read by everyone.
_all_read = (
    select(func.coalesce(func.min(ChatMember.read_seq), 0))
    .where(ChatMember.chat_id == bindparam("chat_id"))
    .scalar_subquery()
    .label("all_read_seq")
)
# Messages as plain rows, not ORM objects: they are read-only here, and loading entities would cost
# most of a page's CPU.
_messages = select(Message.__table__, _all_read).where(Message.chat_id == bindparam("chat_id"))
_limit = bindparam("limit", type_=Integer)
_ORIGINAL = _messages.where(
    Message.sender_id == bindparam("sender_id"), Message.client_id == bindparam("client_id")
)


async def _original(session: AsyncSession, chat_id: int, sender_id: int, client_id: str) -> MessageOut:
    parameters = {"chat_id": chat_id, "sender_id": sender_id, "client_id": client_id}
    row = (await session.execute(_ORIGINAL, parameters)).one()
    await session.commit()
    return message_out(row, row.all_read_seq)


async def mark_read(session: AsyncSession, events: EventBus, chat_id: int, user_id: int, seq: int) -> ReadOut:
    """Move the reader's marker forward to ``seq`` (clamped to the chat's last message), never back.

    Publishes a ``read`` event when the marker moved, carrying the chat's new ``all_read_seq``: the
    lowest marker among the members, up to which every message has been read by everyone.
    """
    # Locking the chat row makes concurrent readers take turns, so the last of them to commit sees
    # every other marker and announces the true all_read_seq.
    last_seq = await session.scalar(
        select(Chat.last_seq)
        .join(ChatMember, and_(ChatMember.chat_id == Chat.id, ChatMember.user_id == user_id))
        .where(Chat.id == chat_id)
        .with_for_update(of=Chat)
    )
    if last_seq is None:
        await session.rollback()
        raise NotMemberError
    target = min(seq, last_seq)
    moved = (
        await session.execute(
            update(ChatMember)
            .where(ChatMember.chat_id == chat_id, ChatMember.user_id == user_id, ChatMember.read_seq < target)
            .values(read_seq=target)
        )
    ).rowcount
    mine, all_read_seq = (
        await session.execute(
            select(
                func.max(case((ChatMember.user_id == user_id, ChatMember.read_seq), else_=0)),
                func.min(ChatMember.read_seq),
            ).where(ChatMember.chat_id == chat_id)
        )
    ).one()
    await session.commit()
    if moved:
        logger.debug("Read marker moved: chat_id=%s user_id=%s seq=%s", chat_id, user_id, mine)
        events.read(chat_id, user_id, mine, all_read_seq)
    return ReadOut(seq=mine, all_read_seq=all_read_seq)


# History pages, built once: a member's page carries the chat's all_read_seq, and a caller who is not
# a member gets no rows. Only an empty page costs a second query, to tell "not a member" from "no
# messages there".
_is_member = (
    exists()
    .where(ChatMember.chat_id == bindparam("chat_id"), ChatMember.user_id == bindparam("user_id"))
    .correlate(None)
)
_page = _messages.where(_is_member)
_PAGE_BEFORE = _page.where(Message.seq < bindparam("before_seq")).order_by(Message.seq.desc()).limit(_limit)
_PAGE_AFTER = _page.where(Message.seq > bindparam("after_seq")).order_by(Message.seq).limit(_limit)
_PAGE_OFFSET = _page.order_by(Message.seq).limit(_limit).offset(bindparam("offset", type_=Integer))
_MEMBER = select(_is_member)


async def history(
    session: AsyncSession,
    chat_id: int,
    user_id: int,
    limit: int,
    offset: int = 0,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> list[MessageOut]:
    """A page of the chat, ascending by seq. ``after_seq``/``before_seq`` page by the (chat, seq) index,
    so they stay fast however long the chat is; ``offset`` is kept for simple clients.
    """
    parameters = {"chat_id": chat_id, "user_id": user_id, "limit": limit}
    if before_seq is not None:
        statement, parameters["before_seq"] = _PAGE_BEFORE, before_seq
    elif after_seq is not None:
        statement, parameters["after_seq"] = _PAGE_AFTER, after_seq
    else:
        statement, parameters["offset"] = _PAGE_OFFSET, offset
    rows = (await session.execute(statement, parameters)).all()
    if not rows and not await session.scalar(_MEMBER, parameters):
        raise NotMemberError
    if before_seq is not None:
        rows.reverse()
    return [message_out(row, row.all_read_seq) for row in rows]


async def can_read(session: AsyncSession, chat_id: int, user_id: int) -> bool:
    """Whether the user is a member of the chat (a missing chat has no members)."""
    return bool(
        await session.scalar(
            select(exists().where(ChatMember.chat_id == chat_id, ChatMember.user_id == user_id))
        )
    )


_CATCH_UP = _messages.where(Message.seq > bindparam("after_seq")).order_by(Message.seq).limit(_limit)


async def messages_after(
    session: AsyncSession, chat_id: int, after_seq: int, limit: int
) -> tuple[list[MessageOut], int]:
    """Catch-up for a socket: up to ``limit`` messages after ``after_seq``, and the chat's last seq."""
    last_seq = await session.scalar(select(Chat.last_seq).where(Chat.id == chat_id))
    parameters = {"chat_id": chat_id, "after_seq": after_seq, "limit": limit}
    rows = (await session.execute(_CATCH_UP, parameters)).all()
    return [message_out(row, row.all_read_seq) for row in rows], last_seq or 0


Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Page size, 1..200")]
Seq = Annotated[int | None, QueryParameter(ge=0)]


class MessageController(Controller):
    tags = ["messages"]

    @get(
        "/history/{chat_id:int}",
        operation_id="history",
        summary="A page of a chat's messages, ascending by seq",
        raises=[NotMemberError],
    )
    async def history(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: FromPath[int],
        db_session: NamedDependency[AsyncSession],
        limit: Limit = 50,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
        after_seq: Seq = None,
        before_seq: Seq = None,
    ) -> list[MessageOut]:
        """Page by ``offset``, or without offsets: ``after_seq=N`` gives the messages after N (catch-up),
        ``before_seq=N`` the ``limit`` messages just before N (scrolling back). Use one of the three.
        """
        if sum((offset > 0, after_seq is not None, before_seq is not None)) > 1:
            raise ClientException("Use one of offset, after_seq and before_seq")
        return await history(db_session, chat_id, request.user.id, limit, offset, after_seq, before_seq)

    @post(
        "/chats/{chat_id:int}/messages",
        operation_id="sendMessage",
        summary="Send a message",
        status_code=HTTP_201_CREATED,
        responses={
            HTTP_200_OK: ResponseSpec(MessageOut, description="A repeated client_id: the original message")
        },
        raises=[NotMemberError, InvalidMessageError],
    )
    async def send(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: FromPath[int],
        data: JSONBody[SendMessageIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
    ) -> Response[MessageOut]:
        """201 with the stored message, delivered to every open socket of the chat. Sending again with
        the same ``client_id`` stores nothing and answers 200 with the original message.
        """
        sent = await send_message(db_session, events, chat_id, request.user.id, data.client_id, data.text)
        return Response(sent.message, status_code=HTTP_201_CREATED if sent.created else HTTP_200_OK)

    @post(
        "/chats/{chat_id:int}/read",
        operation_id="markRead",
        summary="Mark the chat as read up to a seq",
        status_code=HTTP_200_OK,
        raises=[NotMemberError],
    )
    async def read(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: FromPath[int],
        data: JSONBody[ReadIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
    ) -> ReadOut:
        """The marker only moves forward and stops at the chat's last message. ``all_read_seq``: every
        message up to it has been read by every member.
        """
        return await mark_read(db_session, events, chat_id, request.user.id, data.seq)
