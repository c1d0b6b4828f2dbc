"""A reconnecting socket's replay of what it missed: decided from a count, sent a page at a time.

A socket replays by seq (``after_seq``: the new messages) or by rev (``after_rev``: every message
that changed, new ones included, each once in its current state).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.database import unit_of_work
from windi_chat.events import KIND_MESSAGE
from windi_chat.frames import MessageFrame, ResyncFrame
from windi_chat.messaging import changes_up_to, messages_after
from windi_chat.messaging import last_rev as chat_last_rev
from windi_chat.messaging import last_seq as chat_last_seq
from windi_chat.metrics import DELIVERED, METERS
from windi_chat.protocol import encode

__all__ = ("CATCH_UP_PAGE", "FellBehind", "replay", "replay_changes")

CATCH_UP_PAGE = 100  # messages read per query during a catch-up

Send = Callable[[str], Awaitable[None]]


class FellBehind(Exception):  # noqa: N818 - a condition of the socket, not a bug
    """Live events piled up behind a replay that the client reads too slowly."""


async def replay(
    send: Send,
    sessions: async_sessionmaker[AsyncSession],
    chat_id: int,
    after_seq: int,
    stops: Callable[[], bool],
    limit: int,
    *,
    unread_of: Callable[[int], int] | None = None,
) -> int:
    """Send what was stored after ``after_seq``; return the seq up to which live copies are dropped.

    Seqs have no gaps, so the chat's last seq alone says whether a replay is too long: a client far
    behind costs one small query, not a thousand rows. A replay goes out a page at a time, each from
    its own short session, so neither rows nor a database connection are held while a client reads.
    Each frame waits until the connection takes it, so a client that stops reading holds at most one
    page; the registry closes it with 1013 at the send timeout, as it would during live events.
    ``stops`` is asked before each page (and may raise :class:`FellBehind`). More than ``limit`` missed
    messages (``WINDI_WS_CATCH_UP_LIMIT``; ``WINDI_SYNC_LIMIT`` on the gateway) get a resync frame
    instead: the client pages ``/history``.

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
        async with unit_of_work(sessions) as session:
            page = await messages_after(
                session, chat_id, sent_up_to, min(CATCH_UP_PAGE, last_seq - sent_up_to)
            )
        if not page:
            break
        for message in page:
            unread = unread_of(message.seq) if unread_of is not None else None
            await send(encode(MessageFrame(message=message, unread_count=unread)))
        if METERS.on:
            DELIVERED[KIND_MESSAGE].inc(len(page))
        sent_up_to = page[-1].seq
    return sent_up_to


async def replay_changes(
    send: Send,
    sessions: async_sessionmaker[AsyncSession],
    chat_id: int,
    after_rev: int,
    stops: Callable[[], bool],
    limit: int,
    *,
    unread_of: Callable[[int], int] | None = None,
) -> tuple[int, int]:
    """Send every message changed after ``after_rev``, in rev order, as ``message`` frames of its current
    state; return the rev up to which live copies are dropped and the highest seq sent.

    The replay stops at the chat's last rev as read first, ``last_rev``. Every change up to it has
    committed, and the socket was subscribed before it was read, so every later change comes live. A
    message changed again during the replay has left the range: it is not read twice, and its live
    event carries it. Revs have gaps once messages change (a message keeps only its latest), so
    ``last_rev - after_rev`` bounds the changes to replay from above, and decides a resync (past
    ``limit``) as cheaply as for seqs. ``unread_of`` is as for :func:`replay`.
    """
    async with unit_of_work(sessions) as session:
        last_rev = await chat_last_rev(session, chat_id)
    if after_rev > last_rev or last_rev - after_rev > limit:
        chat = chat_id if unread_of is not None else None
        await send(encode(ResyncFrame(after_rev=after_rev, last_rev=last_rev, chat_id=chat)))
        return last_rev, 0
    sent_up_to, top_seq = after_rev, 0
    while sent_up_to < last_rev and not stops():
        async with unit_of_work(sessions) as session:
            page = await changes_up_to(session, chat_id, sent_up_to, last_rev, CATCH_UP_PAGE)
        if not page:
            break
        for message in page:
            unread = unread_of(message.seq) if unread_of is not None else None
            await send(encode(MessageFrame(message=message, unread_count=unread)))
        if METERS.on:
            DELIVERED[KIND_MESSAGE].inc(len(page))
        sent_up_to = page[-1].rev
        top_seq = max(top_seq, *(message.seq for message in page))
    return last_rev, top_seq
