"""The SQL of messages: storing a send, moving a read marker, reading pages.

The hot statements are built once, from the models, and reused: building and compiling them is then
paid once per process, and the database sees the same prepared statement every time. Each one reads
or writes the rows of a single chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CursorResult,
    Integer,
    Row,
    String,
    Text,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.models import metadata

__all__ = (
    "SEND_POSTGRES",
    "NotMember",
    "Repeated",
    "Stored",
    "all_read_seq",
    "is_member",
    "last_seq",
    "move_read_marker",
    "original",
    "page",
    "rows_after",
    "store_message",
)

# Plain Core on the tables, not the ORM entities: a statement that names an entity is executed through
# the ORM's machinery, which costs a send more CPU than the database round trip itself.
_chats, _members, _messages = (metadata.tables[name] for name in ("chats", "chat_members", "messages"))
# Parameters shared by the statements below. None is named like a column: SQLAlchemy would take such
# a parameter of an UPDATE or INSERT as a value to write.
_chat = bindparam("chat", type_=BigInteger)
_sender = bindparam("sender", type_=BigInteger)
_person = bindparam("person", type_=BigInteger)
_now = bindparam("now", type_=_messages.c.created_at.type)
_limit = bindparam("limit", type_=Integer)


# Sending --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """A new message: its seq and id, and the markers needed to tell who has read what."""

    seq: int
    message_id: int
    others_read: int | None  # the lowest marker of the other members (None: nobody else)
    sender_read_before: int


@dataclass(frozen=True, slots=True)
class Repeated:
    """The client id was used before: nothing was stored."""


@dataclass(frozen=True, slots=True)
class NotMember:
    """The sender is not a member of the chat (or the chat does not exist)."""


def _send_postgres() -> Any:
    """Bump the counter, insert, and move the sender's marker, in one statement."""
    member = (
        select(_members.c.read_seq)
        .where(_members.c.chat_id == _chat, _members.c.user_id == _sender)
        .cte("member")
    )
    bumped = (
        update(_chats)
        .where(_chats.c.id == _chat, exists(select(literal_column("1")).select_from(member)))
        .values(last_seq=_chats.c.last_seq + 1, last_activity_at=_now)
        .returning(_chats.c.last_seq)
        .cte("bumped")
    )
    row = select(
        _chat,
        bumped.c.last_seq,
        _sender,
        bindparam("client", type_=String),
        bindparam("body", type_=Text),
        _now,
    )
    inserted = (
        postgres_insert(_messages)
        .from_select(["chat_id", "seq", "sender_id", "client_id", "text", "created_at"], row)
        .on_conflict_do_nothing(
            index_elements=[_messages.c.chat_id, _messages.c.sender_id, _messages.c.client_id]
        )
        .returning(_messages.c.id, _messages.c.seq, _messages.c.sender_id)
        .cte("inserted")
    )
    marked = (
        update(_members)
        .where(_members.c.chat_id == _chat, _members.c.user_id == inserted.c.sender_id)
        .values(read_seq=inserted.c.seq)
        .cte("marked")
    )
    return select(
        select(bumped.c.last_seq).scalar_subquery(),
        select(inserted.c.id).scalar_subquery(),
        select(member.c.read_seq).scalar_subquery(),
    ).add_cte(marked)


SEND_POSTGRES = _send_postgres()
# The statement above reads the members' rows as they were when it started, possibly before it waited
# for the chat row's lock. Every marker or membership change takes that lock first, so reading again
# now that it is held sees them exactly: a member removed meanwhile sends nothing, and the read event
# of a send is computed from the true markers.
_AFTER_LOCK_POSTGRES = select(
    exists().where(_members.c.chat_id == _chat, _members.c.user_id == _sender),
    select(func.min(_members.c.read_seq))
    .where(_members.c.chat_id == _chat, _members.c.user_id != _sender)
    .scalar_subquery(),
)


async def store_message(
    session: AsyncSession, chat_id: int, sender_id: int, client_id: str, text: str, now: datetime
) -> Stored | Repeated | NotMember:
    """Store a message under the chat's next seq, unless the client id was used before."""
    parameters = {
        "chat": chat_id,
        "sender": sender_id,
        "client": client_id,
        "body": text,
        "now": now,
    }
    if session.get_bind().dialect.name != "postgresql":
        return await _store_portable(session, parameters)
    seq, message_id, sender_read = (await session.execute(SEND_POSTGRES, parameters)).one()
    if seq is None:
        return NotMember()
    if message_id is None:
        return Repeated()
    still_member, others_read = (await session.execute(_AFTER_LOCK_POSTGRES, parameters)).one()
    if not still_member:
        return NotMember()
    return Stored(seq, message_id, others_read, sender_read or 0)


_sender_is_member = exists().where(_members.c.chat_id == _chat, _members.c.user_id == _sender)
_BUMP_PORTABLE = (
    update(_chats)
    .where(_chats.c.id == _chat, _sender_is_member)
    .values(last_seq=_chats.c.last_seq + 1, last_activity_at=_now)
    .returning(
        _chats.c.last_seq,
        select(func.min(_members.c.read_seq))
        .where(_members.c.chat_id == _chat, _members.c.user_id != _sender)
        .scalar_subquery(),
        select(_members.c.read_seq)
        .where(_members.c.chat_id == _chat, _members.c.user_id == _sender)
        .scalar_subquery(),
    )
)
_INSERT_PORTABLE = (
    sqlite_insert(_messages)
    .values(
        chat_id=_chat,
        seq=bindparam("new_seq", type_=BigInteger),
        sender_id=_sender,
        client_id=bindparam("client", type_=String),
        text=bindparam("body", type_=Text),
        created_at=_now,
    )
    .on_conflict_do_nothing(
        index_elements=[_messages.c.chat_id, _messages.c.sender_id, _messages.c.client_id]
    )
    .returning(_messages.c.id)
)
_MARK_SENDER = (
    update(_members)
    .where(_members.c.chat_id == _chat, _members.c.user_id == _sender)
    .values(read_seq=bindparam("new_seq", type_=BigInteger))
)


async def _store_portable(session: AsyncSession, parameters: dict[str, Any]) -> Stored | Repeated | NotMember:
    """The steps of ``SEND_POSTGRES``, one statement each (SQLite has no data-changing CTEs)."""
    bumped = (await session.execute(_BUMP_PORTABLE, parameters)).one_or_none()
    if bumped is None:
        return NotMember()
    seq, others_read, sender_read_before = bumped
    parameters = {**parameters, "new_seq": seq}
    message_id = (await session.execute(_INSERT_PORTABLE, parameters)).scalar_one_or_none()
    if message_id is None:
        return Repeated()
    await session.execute(_MARK_SENDER, parameters)
    return Stored(seq, message_id, others_read, sender_read_before)


# Read markers ---------------------------------------------------------------------------------------

# Locking the chat row makes concurrent readers take turns, so the last of them to commit sees every
# other marker and announces the true all_read_seq.
_LOCK_FOR_READER = (
    select(_chats.c.last_seq)
    .join(_members, (_members.c.chat_id == _chats.c.id) & (_members.c.user_id == _person))
    .where(_chats.c.id == _chat)
    .with_for_update(of=_chats)
)
_MOVE_MARKER = (
    update(_members)
    .where(
        _members.c.chat_id == _chat,
        _members.c.user_id == _person,
        _members.c.read_seq < bindparam("target", type_=BigInteger),
    )
    .values(read_seq=bindparam("target", type_=BigInteger))
)
_MARKERS = select(
    func.max(case((_members.c.user_id == _person, _members.c.read_seq), else_=0)),
    func.min(_members.c.read_seq),
).where(_members.c.chat_id == _chat)


async def move_read_marker(
    session: AsyncSession, chat_id: int, user_id: int, seq: int
) -> tuple[bool, int, int] | None:
    """``(moved, the reader's marker, all_read_seq)``, or None when the reader is not a member.

    The marker moves forward to ``seq``, clamped to the chat's last message, and never back.
    """
    parameters = {"chat": chat_id, "person": user_id}
    last_seq = await session.scalar(_LOCK_FOR_READER, parameters)
    if last_seq is None:
        return None
    moved = cast(
        "CursorResult[Any]", await session.execute(_MOVE_MARKER, {**parameters, "target": min(seq, last_seq)})
    )
    mine, all_read = (await session.execute(_MARKERS, parameters)).one()
    return moved.rowcount > 0, mine, all_read


# Reading --------------------------------------------------------------------------------------------

# The lowest marker of the chat's members, as a column of a message query: every message with a seq
# at or below it has been read by everyone.
all_read_seq = (
    select(func.coalesce(func.min(_members.c.read_seq), 0))
    .where(_members.c.chat_id == _chat)
    .scalar_subquery()
    .label("all_read_seq")
)
# Messages as plain rows, not ORM objects: they are read-only here, and loading entities would cost
# most of a page's CPU.
_message_rows = select(_messages, all_read_seq).where(_messages.c.chat_id == _chat)
_ORIGINAL = _message_rows.where(
    _messages.c.sender_id == _sender, _messages.c.client_id == bindparam("client", type_=String)
)
# A member's page carries the chat's all_read_seq; a caller who is not a member gets no rows.
_is_member = exists().where(_members.c.chat_id == _chat, _members.c.user_id == _person).correlate(None)
_page = _message_rows.where(_is_member)
_PAGE_BEFORE = (
    _page.where(_messages.c.seq < bindparam("before_seq")).order_by(_messages.c.seq.desc()).limit(_limit)
)
_PAGE_AFTER = _page.where(_messages.c.seq > bindparam("after_seq")).order_by(_messages.c.seq).limit(_limit)
_PAGE_OFFSET = _page.order_by(_messages.c.seq).limit(_limit).offset(bindparam("offset", type_=Integer))
_MEMBER = select(_is_member)
_AFTER = _message_rows.where(_messages.c.seq > bindparam("after_seq")).order_by(_messages.c.seq).limit(_limit)
_LAST_SEQ = select(_chats.c.last_seq).where(_chats.c.id == _chat)


async def original(session: AsyncSession, chat_id: int, sender_id: int, client_id: str) -> Row[Any]:
    """The message first stored under this client id."""
    parameters = {"chat": chat_id, "sender": sender_id, "client": client_id}
    return (await session.execute(_ORIGINAL, parameters)).one()


async def page(
    session: AsyncSession,
    chat_id: int,
    user_id: int,
    limit: int,
    offset: int = 0,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> list[Row[Any]] | None:
    """A member's page, ascending by seq, or None when ``user_id`` is not a member.

    Only an empty page costs a second query, to tell "not a member" from "no messages there".
    """
    parameters: dict[str, Any] = {"chat": chat_id, "person": user_id, "limit": limit}
    if before_seq is not None:
        statement, parameters["before_seq"] = _PAGE_BEFORE, before_seq
    elif after_seq is not None:
        statement, parameters["after_seq"] = _PAGE_AFTER, after_seq
    else:
        statement, parameters["offset"] = _PAGE_OFFSET, offset
    rows = list((await session.execute(statement, parameters)).all())
    if not rows and not await session.scalar(_MEMBER, parameters):
        return None
    if before_seq is not None:
        rows.reverse()
    return rows


async def rows_after(session: AsyncSession, chat_id: int, after_seq: int, limit: int) -> list[Row[Any]]:
    """Up to ``limit`` messages after ``after_seq``, in seq order (no membership check)."""
    parameters = {"chat": chat_id, "after_seq": after_seq, "limit": limit}
    return list((await session.execute(_AFTER, parameters)).all())


async def last_seq(session: AsyncSession, chat_id: int) -> int:
    return await session.scalar(_LAST_SEQ, {"chat": chat_id}) or 0


async def is_member(session: AsyncSession, chat_id: int, user_id: int) -> bool:
    return bool(await session.scalar(_MEMBER, {"chat": chat_id, "person": user_id}))
