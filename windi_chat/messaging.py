"""Messages: send, mark as read, history. Every rule about messages lives here.

REST and the WebSocket both call these actions, so they cannot drift apart. Each action writes and
commits; its events go out on the commit (see ``events``), so no client hears of anything the
database does not hold. The SQL itself is in ``message_sql``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat import message_batch, message_sql
from windi_chat.errors import ChatNotFoundError, DomainError, InvalidMessageError
from windi_chat.events import Event, EventBus, message_event, read_event
from windi_chat.inputs import text_problem
from windi_chat.message_batch import Batch, Pending
from windi_chat.metrics import BATCH_SIZES, MESSAGES_STORED, METERS
from windi_chat.models import utcnow
from windi_chat.schemas import MAX_TEXT_LENGTH, DeletedSenderOut, MessageOut, ReactionOut, ReadOut

__all__ = (
    "Sent",
    "batch_results",
    "changes",
    "changes_up_to",
    "clean_text",
    "count_stored",
    "history",
    "last_rev",
    "last_seq",
    "mark_read",
    "member_last_seq",
    "member_position",
    "message_out",
    "messages_after",
    "messages_out",
    "repeats_reactions",
    "send_message",
    "send_messages",
)

logger = logging.getLogger("windi_chat.messaging")

DELETED_SENDER = DeletedSenderOut()


def message_out(message: Any, all_read_seq: int, reactions: list[ReactionOut] | None = None) -> MessageOut:
    """The wire form of a message row; ``read`` means every member's marker has reached it."""
    return MessageOut(
        id=message.id,
        chat_id=message.chat_id,
        seq=message.seq,
        sender_id=message.sender_id,
        text=message.text,
        timestamp=message.created_at,
        client_id=message.client_id,
        read=message.seq <= all_read_seq,
        rev=message.rev,
        reply_to=message.reply_to,
        edited_at=message.edited_at,
        deleted=message.deleted,
        reactions=reactions or [],
        sender=DELETED_SENDER if message.sender_id is None else None,
    )


async def messages_out(session: AsyncSession, chat_id: int, rows: Sequence[Any]) -> list[MessageOut]:
    """Rows of one chat in their wire form, each with its reactions (one query for them all)."""
    reactions = await message_sql.reactions_of(session, chat_id, [row.seq for row in rows])
    return [message_out(row, row.all_read_seq, _reactions_out(reactions.get(row.seq, {}))) for row in rows]


def _reactions_out(reactions: dict[str, list[int]]) -> list[ReactionOut]:
    return [ReactionOut(emoji, people) for emoji, people in reactions.items()]


@dataclass(frozen=True, slots=True)
class Sent:
    message: MessageOut
    created: bool  # False: the client id was used before and this is the original message


def clean_text(text: str) -> str:
    trimmed = text.strip()
    if not 1 <= len(trimmed) <= MAX_TEXT_LENGTH:
        raise InvalidMessageError(f"text must hold 1 to {MAX_TEXT_LENGTH} characters after trimming")
    # Checked here too, not only by the frame's schema: one such send must not fail a batch.
    if problem := text_problem(trimmed):
        raise InvalidMessageError(problem)
    return trimmed


async def send_messages(
    session: AsyncSession, events: EventBus, sends: Sequence[Pending], *, wait: bool = True
) -> list[Sent | DomainError | None]:
    """Store checked sends in one transaction and deliver the new messages to the chats' sockets.

    Each send is stored once per (chat, sender, client id): a repeat stores nothing and answers with the
    original. Seqs come from each chat's counter, moved once for the batch under the chat row's lock,
    so they are gap-free and in the order the sends arrived. Sending moves the sender's read marker to
    their message. The events go out on the commit (see :func:`batch_results`).

    Without ``wait``, a send to a chat whose row another transaction holds is not stored now: its
    result is None, and the caller tries it again.
    """
    now = utcnow()
    batch = await message_batch.store_batch(session, sends, now, wait=wait)
    results, out = batch_results(batch, await repeats_reactions(session, batch))
    events.on_commit(session, out)
    await session.commit()
    count_stored(batch)
    return results


async def repeats_reactions(session: AsyncSession, batch: Batch) -> dict[tuple[int, int], list[ReactionOut]]:
    """The reactions of the messages that repeats answer with, by (chat, seq): a repeat answers with
    the message as it now is."""
    found: dict[tuple[int, int], list[ReactionOut]] = {}
    for stored in batch.repeats:
        of_chat = await message_sql.reactions_of(session, stored.chat_id, [stored.seq])
        found[stored.chat_id, stored.seq] = _reactions_out(of_chat.get(stored.seq, {}))
    return found


def batch_results(
    batch: Batch, reactions: dict[tuple[int, int], list[ReactionOut]]
) -> tuple[list[Sent | DomainError | None], list[Event]]:
    """Each send's answer, and the batch's events: each chat's new messages in seq order, then at most
    one ``read`` event per chat, when the batch moved its all_read_seq (a sender was the last reader).
    """
    results: list[Sent | DomainError | None] = []
    out: list[Event] = []
    last_sent: dict[int, message_batch.Stored] = {}
    for outcome in batch.outcomes:
        if outcome is None:
            results.append(None)
        elif outcome.bad_reply:
            results.append(InvalidMessageError("reply_to names no message of this chat"))
        elif outcome.message is None:
            results.append(ChatNotFoundError())
        else:
            stored = outcome.message
            all_read = batch.all_read[stored.chat_id][1]
            message = message_out(stored, all_read, reactions.get((stored.chat_id, stored.seq)))
            results.append(Sent(message, outcome.created))
            if outcome.created:
                out.append(message_event(message))
                last_sent[stored.chat_id] = stored
    for chat_id, last in last_sent.items():
        before, after = batch.all_read[chat_id]
        if after > before:
            out.append(read_event(chat_id, last.sender_id, last.seq, after))
    return results, out


def count_stored(batch: Batch) -> None:
    """The metrics of a committed batch."""
    if METERS.on:
        BATCH_SIZES.observe(len(batch.outcomes))
        MESSAGES_STORED.inc(sum(1 for outcome in batch.outcomes if outcome and outcome.created))


async def send_message(
    session: AsyncSession,
    events: EventBus,
    chat_id: int,
    sender_id: int,
    client_id: str,
    text: str,
    reply_to: int | None = None,
) -> Sent:
    """One send, checked and stored on its own (see :func:`send_messages`)."""
    [result] = await send_messages(
        session, events, [Pending(chat_id, sender_id, client_id, clean_text(text), reply_to)]
    )
    if result is None or isinstance(result, DomainError):
        raise result or ChatNotFoundError()  # a waiting send always has an outcome
    return result


async def mark_read(session: AsyncSession, events: EventBus, chat_id: int, user_id: int, seq: int) -> ReadOut:
    """Move the reader's marker forward to ``seq`` (clamped to the chat's last message), never back.

    Publishes a ``read`` event when the marker moved, carrying the chat's new ``all_read_seq``: the
    lowest marker among the members, up to which every message has been read by everyone.
    """
    markers = await message_sql.move_read_marker(session, chat_id, user_id, seq)
    if markers is None:
        await session.rollback()
        raise ChatNotFoundError
    moved, mine, all_read_seq = markers
    if moved:
        events.read(session, chat_id, user_id, mine, all_read_seq)
    await session.commit()
    if moved:
        logger.debug("Read marker moved: chat_id=%s user_id=%s seq=%s", chat_id, user_id, mine)
    return ReadOut(seq=mine, all_read_seq=all_read_seq)


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
    rows = await message_sql.page(session, chat_id, user_id, limit, offset, after_seq, before_seq)
    if rows is None:
        raise ChatNotFoundError
    return await messages_out(session, chat_id, rows)


async def changes(
    session: AsyncSession, chat_id: int, user_id: int, after_rev: int, limit: int
) -> list[MessageOut]:
    """The change feed: the messages changed after ``after_rev`` (new ones too), each once in its current
    state, ascending by rev. A deleted message is there as its tombstone.
    """
    rows = await message_sql.changes(session, chat_id, user_id, after_rev, limit)
    if rows is None:
        raise ChatNotFoundError
    return await messages_out(session, chat_id, rows)


async def member_last_seq(session: AsyncSession, chat_id: int, user_id: int) -> int | None:
    """The chat's last seq if the user is a member, else None: where a new socket's live events start."""
    return await message_sql.member_last_seq(session, chat_id, user_id)


async def member_position(session: AsyncSession, chat_id: int, user_id: int) -> tuple[int, int] | None:
    """The chat's ``(last_seq, last_rev)`` if the user is a member, else None: where a new socket starts."""
    return await message_sql.member_position(session, chat_id, user_id)


async def last_rev(session: AsyncSession, chat_id: int) -> int:
    """The chat's last rev: at most ``last_rev - after_rev`` changes follow ``after_rev``."""
    return await message_sql.last_rev(session, chat_id)


async def last_seq(session: AsyncSession, chat_id: int) -> int:
    """The chat's last seq; seqs have no gaps, so ``last_seq - after_seq`` messages follow ``after_seq``."""
    return await message_sql.last_seq(session, chat_id)


async def messages_after(session: AsyncSession, chat_id: int, after_seq: int, limit: int) -> list[MessageOut]:
    """One page of a socket's catch-up: up to ``limit`` messages after ``after_seq``."""
    rows = await message_sql.rows_after(session, chat_id, after_seq, limit)
    return await messages_out(session, chat_id, rows)


async def changes_up_to(
    session: AsyncSession, chat_id: int, after_rev: int, up_to: int, limit: int
) -> list[MessageOut]:
    """One page of a socket's catch-up by rev: up to ``limit`` messages with a rev in (after_rev, up_to]."""
    rows = await message_sql.changes_up_to(session, chat_id, after_rev, up_to, limit)
    return await messages_out(session, chat_id, rows)
