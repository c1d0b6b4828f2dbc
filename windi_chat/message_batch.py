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

from sqlalchemy import BigInteger, String, Text, bindparam, exists, func, select, update
from sqlalchemy import text as sql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.message_sql import all_read_of, original
from windi_chat.models import metadata

__all__ = (
    "LOCK_FREE_CHATS",
    "STORE_BATCH_POSTGRES",
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


# The chats' rows are locked first, so that the statement after it, which takes a new snapshot, sees
# every marker and membership exactly: each writer of those takes the chat row's lock first. A batch
# takes the rows it can lock at once and answers with the chats it could not: one chat held by someone
# else (another process, an operator's transaction) must not hold up the sends to every other chat.
LOCK_FREE_CHATS = sql(
    """
    WITH wanted AS (SELECT id FROM chats WHERE id = ANY(:chats)),
    locked AS (SELECT id FROM chats WHERE id = ANY(:chats) FOR UPDATE SKIP LOCKED)
    SELECT id FROM wanted WHERE id NOT IN (SELECT id FROM locked)
    """
)
# Waiting for every row, in id order so that two waiting transactions cannot deadlock.
_LOCK_CHATS = sql("SELECT id FROM chats WHERE id = ANY(:chats) ORDER BY id FOR UPDATE")
# One row out per send in. ``first_idx`` is the first send of the batch with the same key: a later one
# is a repeat of it. ``old_*`` is a message stored before the batch under the same key. Sends to the
# ``busy`` chats (held elsewhere) are left out, and answered with ``busy``.
# Written as SQL rather than built with Core: it reads better, and it is prepared once either way.
STORE_BATCH_POSTGRES = sql(
    """
    WITH every AS (
        SELECT * FROM unnest(
            CAST(:chats AS bigint[]), CAST(:senders AS bigint[]),
            CAST(:clients AS text[]), CAST(:bodies AS text[]), CAST(:replies AS bigint[])
        ) WITH ORDINALITY AS i(chat_id, sender_id, client_id, text, reply_to, idx)
    ), input AS (
        SELECT * FROM every WHERE chat_id <> ALL(CAST(:busy AS bigint[]))
    ), firsts AS (
        SELECT DISTINCT ON (chat_id, sender_id, client_id) * FROM input
        ORDER BY chat_id, sender_id, client_id, idx
    ), fresh AS (
        SELECT f.*, row_number() OVER (PARTITION BY f.chat_id ORDER BY f.idx) AS n
        FROM firsts f
        JOIN chat_members m ON m.chat_id = f.chat_id AND m.user_id = f.sender_id
        JOIN chats c ON c.id = f.chat_id
        WHERE (f.reply_to IS NULL OR f.reply_to BETWEEN 1 AND c.last_seq) AND NOT EXISTS (
            SELECT 1 FROM messages x
            WHERE x.chat_id = f.chat_id AND x.sender_id = f.sender_id AND x.client_id = f.client_id
        )
    ), counts AS (
        SELECT chat_id, count(*) AS new FROM fresh GROUP BY chat_id
    ), bumped AS (
        UPDATE chats SET last_seq = chats.last_seq + counts.new, last_rev = chats.last_rev + counts.new,
            last_activity_at = :now
        FROM counts WHERE chats.id = counts.chat_id
        RETURNING chats.id, chats.last_seq - counts.new AS base, chats.last_rev - counts.new AS base_rev
    ), inserted AS (
        INSERT INTO messages
            (chat_id, seq, rev, sender_id, client_id, text, reply_to, created_at, deleted)
        SELECT fresh.chat_id, bumped.base + fresh.n, bumped.base_rev + fresh.n, fresh.sender_id,
            fresh.client_id, fresh.text, fresh.reply_to, :now, false
        FROM fresh JOIN bumped ON bumped.id = fresh.chat_id
        RETURNING id, chat_id, seq, rev, sender_id, client_id
    ), newest AS (
        SELECT chat_id, sender_id, max(seq) AS seq FROM inserted GROUP BY chat_id, sender_id
    ), marked AS (
        UPDATE chat_members SET read_seq = newest.seq FROM newest
        WHERE chat_members.chat_id = newest.chat_id AND chat_members.user_id = newest.sender_id
          AND chat_members.read_seq < newest.seq
    ), markers AS (
        -- Every member's marker before the batch, and after it: senders have read up to their newest.
        SELECT m.chat_id, min(m.read_seq) AS before,
            min(greatest(m.read_seq, coalesce(newest.seq, 0))) AS after
        FROM chat_members m
        LEFT JOIN newest ON newest.chat_id = m.chat_id AND newest.sender_id = m.user_id
        WHERE m.chat_id IN (SELECT chat_id FROM input)
        GROUP BY m.chat_id
    )
    SELECT i.idx, f.idx AS first_idx, m.user_id IS NOT NULL AS member,
        x.id AS old_id, x.seq AS old_seq, x.text AS old_text, x.created_at AS old_created_at,
        x.rev AS old_rev, x.reply_to AS old_reply_to, x.edited_at AS old_edited_at,
        x.deleted AS old_deleted, ins.id AS new_id, ins.seq AS new_seq, ins.rev AS new_rev,
        r.before, r.after, i.chat_id = ANY(CAST(:busy AS bigint[])) AS busy
    FROM every i
    LEFT JOIN firsts f ON f.chat_id = i.chat_id AND f.sender_id = i.sender_id AND f.client_id = i.client_id
    LEFT JOIN chat_members m ON m.chat_id = i.chat_id AND m.user_id = i.sender_id
    LEFT JOIN messages x ON x.chat_id = i.chat_id AND x.sender_id = i.sender_id AND x.client_id = i.client_id
    LEFT JOIN inserted ins
        ON ins.chat_id = i.chat_id AND ins.sender_id = i.sender_id AND ins.client_id = i.client_id
    LEFT JOIN markers r ON r.chat_id = i.chat_id
    ORDER BY i.idx
    """
)


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
        await session.execute(_LOCK_CHATS, {"chats": chats})
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


_chats, _members, _messages = (metadata.tables[name] for name in ("chats", "chat_members", "messages"))
_chat = bindparam("chat", type_=BigInteger)
_sender = bindparam("sender", type_=BigInteger)
_seq = bindparam("new_seq", type_=BigInteger)
_now = bindparam("now", type_=_messages.c.created_at.type)
_reply = bindparam("reply", type_=BigInteger)
_IS_MEMBER_SQLITE = select(exists().where(_members.c.chat_id == _chat, _members.c.user_id == _sender))
# SQLite has no data-changing CTEs: one statement per step. Parameters are not named like columns,
# which SQLAlchemy would take as values to write.
_BUMP_SQLITE = (
    update(_chats)
    .where(
        _chats.c.id == _chat,
        exists().where(_members.c.chat_id == _chat, _members.c.user_id == _sender),
        _reply.is_(None) | _reply.between(1, _chats.c.last_seq),
    )
    .values(last_seq=_chats.c.last_seq + 1, last_rev=_chats.c.last_rev + 1, last_activity_at=_now)
    .returning(_chats.c.last_seq, _chats.c.last_rev)
)
_INSERT_SQLITE = (
    sqlite_insert(_messages)
    .values(
        chat_id=_chat,
        seq=_seq,
        rev=bindparam("new_rev", type_=BigInteger),
        sender_id=_sender,
        client_id=bindparam("client", type_=String),
        text=bindparam("body", type_=Text),
        reply_to=_reply,
        created_at=_now,
        deleted=False,
    )
    .on_conflict_do_nothing(index_elements=["chat_id", "sender_id", "client_id"])
    .returning(_messages.c.id)
)
_UNBUMP_SQLITE = (
    update(_chats)
    .where(_chats.c.id == _chat)
    .values(
        last_seq=_chats.c.last_seq - 1,
        last_rev=_chats.c.last_rev - 1,
        last_activity_at=func.coalesce(
            select(_messages.c.created_at)
            .where(_messages.c.chat_id == _chat, _messages.c.seq == _chats.c.last_seq - 1)
            .scalar_subquery(),
            _chats.c.created_at,
        ),
    )
)
_LOCK_CHATS_SQLITE = (
    update(_chats)
    .where(_chats.c.id.in_(bindparam("chats", expanding=True)))
    .values(last_seq=_chats.c.last_seq)
)
_MARK_SENDER_SQLITE = (
    update(_members).where(_members.c.chat_id == _chat, _members.c.user_id == _sender).values(read_seq=_seq)
)


async def _store_one(session: AsyncSession, send: Pending, now: datetime) -> Outcome:
    parameters: dict[str, Any] = {
        "chat": send.chat_id,
        "sender": send.sender_id,
        "client": send.client_id,
        "body": send.text,
        "reply": send.reply_to,
        "now": now,
    }
    bumped = (await session.execute(_BUMP_SQLITE, parameters)).one_or_none()
    if bumped is None:
        if send.reply_to is not None and await session.scalar(_IS_MEMBER_SQLITE, parameters):
            # A repeat answers with its original whatever it names; anything else answers a missing seq.
            if (row := await original(session, send.chat_id, send.sender_id, send.client_id)) is not None:
                return Outcome(_stored(row), created=False)
            return Outcome(None, created=False, bad_reply=True)
        return Outcome(None, created=False)
    seq, rev = bumped
    parameters["new_seq"], parameters["new_rev"] = seq, rev
    message_id = (await session.execute(_INSERT_SQLITE, parameters)).scalar_one_or_none()
    if message_id is not None:
        await session.execute(_MARK_SENDER_SQLITE, parameters)
        stored = Stored(
            message_id, send.chat_id, seq, send.sender_id, send.client_id, send.text, now, rev, send.reply_to
        )
        return Outcome(stored, True)
    # A repeat: put the counter and the chat's activity back as they were; answer with the original.
    await session.execute(_UNBUMP_SQLITE, parameters)
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
    await session.execute(_LOCK_CHATS_SQLITE, {"chats": sorted(chats)})
    before = {chat_id: await all_read_of(session, chat_id) for chat_id in chats}
    outcomes: list[Outcome | None] = [await _store_one(session, send, now) for send in sends]
    all_read = {chat_id: (before[chat_id], await all_read_of(session, chat_id)) for chat_id in chats}
    return Batch(outcomes, all_read)
