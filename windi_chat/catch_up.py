"""A reconnecting socket's replay of what it missed: decided from a count, sent a page at a time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.database import unit_of_work
from windi_chat.events import KIND_MESSAGE
from windi_chat.frames import MessageFrame, ResyncFrame
from windi_chat.messaging import last_seq as chat_last_seq
from windi_chat.messaging import messages_after
from windi_chat.metrics import DELIVERED, METERS
from windi_chat.protocol import encode

__all__ = ("CATCH_UP_LIMIT", "CATCH_UP_PAGE", "FellBehind", "replay")

CATCH_UP_LIMIT = 1000  # more missed messages than this get a resync frame: the client pages /history
CATCH_UP_PAGE = 100  # messages read per query during a catch-up


class FellBehind(Exception):  # noqa: N818 - a condition of the socket, not a bug
    """Live events piled up behind a replay that the client reads too slowly."""


async def replay(
    send: Callable[[str], Awaitable[None]],
    sessions: async_sessionmaker[AsyncSession],
    chat_id: int,
    after_seq: int,
    stops: Callable[[], bool],
    *,
    limit: int = CATCH_UP_LIMIT,
    unread_of: Callable[[int], int] | None = None,
) -> int:
    """Send what was stored after ``after_seq``; return the seq up to which live copies are dropped.

    Seqs have no gaps, so the chat's last seq alone says whether a replay is too long: a client far
    behind costs one small query, not a thousand rows. A replay goes out a page at a time, each from
    its own short session, so neither rows nor a database connection are held while a client reads.
    Each frame waits until the connection takes it, so a client that stops reading holds at most one
    page; the registry closes it with 1013 at the send timeout, as it would during live events.
    ``stops`` is asked before each page (and may raise :class:`FellBehind`).

    On the gateway, ``unread_of`` gives the person's unread count after a message's seq: its frames
    carry it, and a resync names its chat.
    """
    async with unit_of_work(sessions) as session:
        last_seq = await chat_last_seq(session, chat_id)
    if after_seq > last_seq or last_seq - after_seq > limit:
        # Too much to replay, or the client knows of seqs this chat never had: it pages /history.
        chat = chat_id if unread_of is not None else None
        await send(encode(ResyncFrame(after_seq=after_seq, last_seq=last_seq, chat_id=chat)))
        return last_seq
    sent_up_to = after_seq
    while sent_up_to < last_seq and not stops():
        limit = min(CATCH_UP_PAGE, last_seq - sent_up_to)
        async with unit_of_work(sessions) as session:
            page = await messages_after(session, chat_id, sent_up_to, limit)
        if not page:
            break
        for message in page:
            unread = unread_of(message.seq) if unread_of is not None else None
            await send(encode(MessageFrame(message=message, unread_count=unread)))
        if METERS.on:
            DELIVERED[KIND_MESSAGE].inc(len(page))
        sent_up_to = page[-1].seq
    return sent_up_to
