"""The SQL of storing a batch of sends (the outcomes and the code that runs it are ``message_batch``).

On PostgreSQL, one statement stores the whole batch, after the statement that locks its chats' rows.
SQLite has no data-changing CTEs: there, each send takes a few small statements.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, String, Text, bindparam, exists, func, select, update
from sqlalchemy import text as sql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from windi_chat.models import metadata

__all__ = (
    "BUMP_SQLITE",
    "INSERT_SQLITE",
    "IS_MEMBER_SQLITE",
    "LOCK_CHATS",
    "LOCK_CHATS_SQLITE",
    "LOCK_FREE_CHATS",
    "MARK_SENDER_SQLITE",
    "STORE_BATCH_POSTGRES",
    "UNBUMP_SQLITE",
)

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
LOCK_CHATS = sql("SELECT id FROM chats WHERE id = ANY(:chats) ORDER BY id FOR UPDATE")
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


_chats, _members, _messages = (metadata.tables[name] for name in ("chats", "chat_members", "messages"))
_chat = bindparam("chat", type_=BigInteger)
_sender = bindparam("sender", type_=BigInteger)
_seq = bindparam("new_seq", type_=BigInteger)
_now = bindparam("now", type_=_messages.c.created_at.type)
_reply = bindparam("reply", type_=BigInteger)
IS_MEMBER_SQLITE = select(exists().where(_members.c.chat_id == _chat, _members.c.user_id == _sender))
# SQLite has no data-changing CTEs: one statement per step. Parameters are not named like columns,
# which SQLAlchemy would take as values to write.
BUMP_SQLITE = (
    update(_chats)
    .where(
        _chats.c.id == _chat,
        exists().where(_members.c.chat_id == _chat, _members.c.user_id == _sender),
        _reply.is_(None) | _reply.between(1, _chats.c.last_seq),
    )
    .values(last_seq=_chats.c.last_seq + 1, last_rev=_chats.c.last_rev + 1, last_activity_at=_now)
    .returning(_chats.c.last_seq, _chats.c.last_rev)
)
INSERT_SQLITE = (
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
UNBUMP_SQLITE = (
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
LOCK_CHATS_SQLITE = (
    update(_chats)
    .where(_chats.c.id.in_(bindparam("chats", expanding=True)))
    .values(last_seq=_chats.c.last_seq)
)
MARK_SENDER_SQLITE = (
    update(_members).where(_members.c.chat_id == _chat, _members.c.user_id == _sender).values(read_seq=_seq)
)
