"""Storing a batch of sends in one transaction, with a constant number of statements.

Every send of the batch gets one outcome: stored under the chat's next seq, a repeat of a message
already stored under the same (chat, sender, client id) (earlier, or earlier in this batch), or refused
because the sender is not a member. Seqs stay gap-free: each chat's counter moves once, by its number of
new messages, and they are numbered in the order they arrived.

A batch may span chats, but no chat depends on another: each chat's rows change as if its sends had
come alone, so storage can be partitioned by chat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.batch_sql import (
    BUMP_SQLITE,
    INSERT_SQLITE,
    IS_MEMBER_SQLITE,
    LOCK_CHATS,
    LOCK_CHATS_SQLITE,
    LOCK_FREE_CHATS,
    MARK_SENDER_SQLITE,
    STORE_BATCH_POSTGRES,
    UNBUMP_SQLITE,
)
from windi_chat.message_sql import all_read_of, original

__all__ = (
    "Batch",
    "Outcome",
    "Pending",
    "Stored",
    "batch_of",
    "batch_parameters",
    "store_batch",
)


@dataclass(frozen=True, slots=True)
class Pending:
    """A send, checked and trimmed, waiting to be stored."""

    chat_id: int
    sender_id: int
    client_id: str
    text: str
    # The seq of the message this one answers; it must already be stored when the batch begins.
    reply_to: int | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A message row as the batch leaves it."""

    id: int
    chat_id: int
    seq: int
    sender_id: int
    client_id: str
    text: str
    created_at: datetime
    rev: int
    reply_to: int | None = None
    edited_at: datetime | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one send: ``message`` is None when the sender is not a member, or when
    ``bad_reply``: it answers a seq the chat does not hold."""

    message: Stored | None
    created: bool
    bad_reply: bool = False


@dataclass(frozen=True, slots=True)
class Batch:
    # One per send; None: its chat's row was locked by another transaction, so it was not stored now.
    outcomes: list[Outcome | None]
    # For each chat of a member's send: its all_read_seq before the batch and after it.
    all_read: dict[int, tuple[int, int]]

    @property
    def repeats(self) -> list[Stored]:
        """The stored messages that repeated sends answer with."""
        return [o.message for o in self.outcomes if o is not None and o.message is not None and not o.created]


async def store_batch(
    session: AsyncSession, sends: Sequence[Pending], now: datetime, *, wait: bool = True
) -> Batch:
    """Store ``sends`` in the session's transaction (the caller commits); one outcome per send.

    Without ``wait``, sends to a chat whose row another transaction holds are left out (their outcome
    is None) instead of waiting for it.
    """
    if session.get_bind().dialect.name != "postgresql":
        return await _store_one_by_one(session, sends, now)
    busy: list[int] = []
    chats = sorted({send.chat_id for send in sends})
    if wait:
        await session.execute(LOCK_CHATS, {"chats": chats})
    else:
        busy = list(await session.scalars(LOCK_FREE_CHATS, {"chats": chats}))
    rows = await session.execute(STORE_BATCH_POSTGRES, batch_parameters(sends, now, busy))
    return batch_of(sends, rows.all(), now)


def batch_parameters(sends: Sequence[Pending], now: datetime, busy: Sequence[int] = ()) -> dict[str, Any]:
    """``STORE_BATCH_POSTGRES``'s parameters: one array per column, in the order the sends came, and
    the chats whose rows another transaction holds (their sends are left out)."""
    return {
        "chats": [send.chat_id for send in sends],
        "senders": [send.sender_id for send in sends],
        "clients": [send.client_id for send in sends],
        "bodies": [send.text for send in sends],
        "replies": [send.reply_to for send in sends],
        "now": now,
        "busy": list(busy),
    }


def batch_of(sends: Sequence[Pending], rows: Sequence[Sequence[Any]], now: datetime) -> Batch:
    """The outcomes in ``STORE_BATCH_POSTGRES``'s rows (by position: a driver's record or a Row)."""
    outcomes: list[Outcome | None] = []
    all_read: dict[int, tuple[int, int]] = {}
    for send, row in zip(sends, rows, strict=True):
        (idx, first_idx, member, old_id, old_seq, old_text, old_created_at, old_rev, old_reply_to,
         old_edited_at, old_deleted, new_id, new_seq, new_rev, before, after, busy) = row  # fmt: skip
        if busy:
            outcomes.append(None)
            continue
        if not member:
            outcomes.append(Outcome(None, created=False))
            continue
        all_read[send.chat_id] = (before, after)
        if old_id is not None:
            stored = Stored(
                old_id,
                send.chat_id,
                old_seq,
                send.sender_id,
                send.client_id,
                old_text,
                old_created_at,
                old_rev,
                old_reply_to,
                old_edited_at,
                old_deleted,
            )
            outcomes.append(Outcome(stored, created=False))
            continue
        if new_id is None:
            outcomes.append(Outcome(None, created=False, bad_reply=True))
            continue
        first = sends[first_idx - 1]
        stored = Stored(
            new_id, send.chat_id, new_seq, send.sender_id, send.client_id, first.text, now, new_rev,
            first.reply_to,
        )  # fmt: skip
        outcomes.append(Outcome(stored, created=first_idx == idx))
    return Batch(outcomes, all_read)


async def _store_one(session: AsyncSession, send: Pending, now: datetime) -> Outcome:
    parameters: dict[str, Any] = {
        "chat": send.chat_id,
        "sender": send.sender_id,
        "client": send.client_id,
        "body": send.text,
        "reply": send.reply_to,
        "now": now,
    }
    bumped = (await session.execute(BUMP_SQLITE, parameters)).one_or_none()
    if bumped is None:
        if send.reply_to is not None and await session.scalar(IS_MEMBER_SQLITE, parameters):
            # A repeat answers with its original whatever it names; anything else answers a missing seq.
            if (row := await original(session, send.chat_id, send.sender_id, send.client_id)) is not None:
                return Outcome(_stored(row), created=False)
            return Outcome(None, created=False, bad_reply=True)
        return Outcome(None, created=False)
    seq, rev = bumped
    parameters["new_seq"], parameters["new_rev"] = seq, rev
    message_id = (await session.execute(INSERT_SQLITE, parameters)).scalar_one_or_none()
    if message_id is not None:
        await session.execute(MARK_SENDER_SQLITE, parameters)
        stored = Stored(
            message_id, send.chat_id, seq, send.sender_id, send.client_id, send.text, now, rev, send.reply_to
        )
        return Outcome(stored, True)
    # A repeat: put the counter and the chat's activity back as they were; answer with the original.
    await session.execute(UNBUMP_SQLITE, parameters)
    row = await original(session, send.chat_id, send.sender_id, send.client_id)
    if row is None:  # the unique constraint said it was there
        raise RuntimeError("a repeated client id without its original message")
    return Outcome(_stored(row), created=False)


def _stored(row: Any) -> Stored:
    return Stored(
        row.id,
        row.chat_id,
        row.seq,
        row.sender_id,
        row.client_id,
        row.text,
        row.created_at,
        row.rev,
        row.reply_to,
        row.edited_at,
        row.deleted,
    )


async def _store_one_by_one(session: AsyncSession, sends: Sequence[Pending], now: datetime) -> Batch:
    """SQLite has one writer anyway: the same outcomes, one send after the other in one transaction."""
    chats = {send.chat_id for send in sends}
    # Write first, so that the transaction holds SQLite's write lock before it reads anything.
    await session.execute(LOCK_CHATS_SQLITE, {"chats": sorted(chats)})
    before = {chat_id: await all_read_of(session, chat_id) for chat_id in chats}
    outcomes: list[Outcome | None] = [await _store_one(session, send, now) for send in sends]
    all_read = {chat_id: (before[chat_id], await all_read_of(session, chat_id)) for chat_id in chats}
    return Batch(outcomes, all_read)
