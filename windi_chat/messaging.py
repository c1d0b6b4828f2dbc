"""Messages: send, mark as read, history. Every rule about messages lives here.

REST and the WebSocket both call these actions, so they cannot drift apart. Each action writes and
commits; its events go out on the commit (see ``events``), so no client hears of anything the
database does not hold. The SQL itself is in ``message_sql``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat import message_sql
from windi_chat.errors import ChatNotFoundError, InvalidMessageError
from windi_chat.events import EventBus
from windi_chat.message_sql import NotMember, Repeated
from windi_chat.models import utcnow
from windi_chat.schemas import MAX_TEXT_LENGTH, MessageOut, ReadOut

__all__ = (
    "Sent",
    "can_read",
    "history",
    "last_seq",
    "mark_read",
    "message_out",
    "messages_after",
    "send_message",
)

logger = logging.getLogger("windi_chat.messaging")


def message_out(message: Any, all_read_seq: int) -> MessageOut:
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
    stored = await message_sql.store_message(session, chat_id, sender_id, client_id, text, now)
    if isinstance(stored, NotMember | Repeated):
        await session.rollback()
        if isinstance(stored, NotMember):
            raise ChatNotFoundError
        row = await message_sql.original(session, chat_id, sender_id, client_id)
        await session.commit()
        return Sent(message_out(row, row.all_read_seq), created=False)
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
    events.message(session, message)
    if all_read_seq > all_read_before:
        # The sender was the last to read the earlier messages: sending read them, so say so.
        events.read(session, chat_id, sender_id, seq, all_read_seq)
    await session.commit()
    logger.debug("Message stored: chat_id=%s seq=%s sender_id=%s", chat_id, seq, sender_id)
    return Sent(message, created=True)


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
    return [message_out(row, row.all_read_seq) for row in rows]


async def can_read(session: AsyncSession, chat_id: int, user_id: int) -> bool:
    """Whether the user is a member of the chat (a missing chat has no members)."""
    return await message_sql.is_member(session, chat_id, user_id)


async def last_seq(session: AsyncSession, chat_id: int) -> int:
    """The chat's last seq; seqs have no gaps, so ``last_seq - after_seq`` messages follow ``after_seq``."""
    return await message_sql.last_seq(session, chat_id)


async def messages_after(session: AsyncSession, chat_id: int, after_seq: int, limit: int) -> list[MessageOut]:
    """One page of a socket's catch-up: up to ``limit`` messages after ``after_seq``."""
    rows = await message_sql.rows_after(session, chat_id, after_seq, limit)
    return [message_out(row, row.all_read_seq) for row in rows]
