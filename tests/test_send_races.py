"""A send that waits for the chat row's lock sees what committed meanwhile (PostgreSQL).

The test holds the chat row locked from another connection, starts a send (which then waits for the
lock), changes what a concurrent reader or owner would change, and commits. The send must act on the
committed state: a member removed meanwhile stores nothing, and a marker moved meanwhile counts.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from tests.conftest import make_settings
from windi_chat.database import create_db_config
from windi_chat.errors import ChatNotFoundError
from windi_chat.events import EventBus, split_event
from windi_chat.messaging import send_message


class RecordingEvents:
    """What the action published, decoded: an ``EventBus`` whose publish keeps each frame."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.bus = EventBus(lambda payload, _channel: self.frames.append(json.loads(split_event(payload)[2])))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [frame["message"] for frame in self.frames if frame["type"] == "message"]

    @property
    def reads(self) -> list[tuple[int, int, int, int]]:
        return [
            (frame["chat_id"], frame["user_id"], frame["seq"], frame["all_read_seq"])
            for frame in self.frames
            if frame["type"] == "read"
        ]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _seed(dsn: str) -> None:
    """Ada (1) and Bob (2) in chat 1 with three messages; Ada has read them all, Bob up to seq 1."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO users (id, name, email, password_hash, created_at) OVERRIDING SYSTEM VALUE "
            "VALUES (1, 'Ada', 'ada@example.com', 'x', now()), (2, 'Bob', 'bob@example.com', 'x', now());"
            "INSERT INTO chats (id, type, created_at, last_seq, last_rev, last_activity_at) "
            "OVERRIDING SYSTEM VALUE VALUES (1, 'private', now(), 3, 3, now());"
            "INSERT INTO messages (chat_id, seq, rev, sender_id, client_id, text, created_at, deleted) "
            "VALUES (1, 1, 1, 1, 'a', 'one', now(), false), (1, 2, 2, 2, 'b', 'two', now(), false),"
            " (1, 3, 3, 2, 'c', 'three', now(), false);"
            "INSERT INTO chat_members (chat_id, user_id, role, joined_at, read_seq) "
            "VALUES (1, 1, 'member', now(), 3), (1, 2, 'member', now(), 1)"
        )
    finally:
        await connection.close()


async def _send_while_locked(url: str, change: str) -> tuple[Any, RecordingEvents, list[Any]]:
    """Bob sends while the chat row is locked by a transaction that makes ``change`` and commits."""
    dsn = _dsn(url)
    await _seed(dsn)
    config = create_db_config(make_settings(url))
    events = RecordingEvents()
    locker, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("SELECT 1 FROM chats WHERE id = 1 FOR UPDATE")

        async def send() -> Any:
            async with config.create_session_maker()() as session:
                return await send_message(session, events.bus, 1, 2, "racing", "hello")

        sending = asyncio.create_task(send())
        for _ in range(200):  # until the send waits for the lock
            # From another connection: activity seen inside a transaction is a snapshot taken once.
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting:
                break
            if sending.done():
                pytest.fail(f"the send finished without waiting for the lock: {sending.result()!r}")
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the send never waited for the chat row's lock")
        await locker.execute(change)
        await transaction.commit()
        outcome = await asyncio.gather(sending, return_exceptions=True)
        stored = await locker.fetch("SELECT seq, client_id FROM messages WHERE chat_id = 1 ORDER BY seq")
        return outcome[0], events, list(stored)
    finally:
        await locker.close()
        await watcher.close()
        await config.get_engine().dispose()


def test_a_member_removed_while_the_send_waits_stores_nothing(pg_database_url: str) -> None:
    outcome, events, stored = asyncio.run(
        _send_while_locked(pg_database_url, "DELETE FROM chat_members WHERE chat_id = 1 AND user_id = 2")
    )

    assert isinstance(outcome, ChatNotFoundError)
    assert [row["client_id"] for row in stored] == ["a", "b", "c"]
    assert events.messages == []


def test_a_message_committed_while_the_send_waits_counts_for_the_read_event(pg_database_url: str) -> None:
    # Meanwhile Ada sends seq 4, which moves her marker to 4. Bob's send (seq 5) reads everything up to
    # 4 for him: all_read_seq is then 4, and his send must announce 4 (not the 3 it saw at its start).
    ada_sends = (
        "UPDATE chats SET last_seq = 4, last_rev = 4 WHERE id = 1;"
        "INSERT INTO messages (chat_id, seq, rev, sender_id, client_id, text, created_at, deleted) "
        "VALUES (1, 4, 4, 1, 'd', 'four', now(), false);"
        "UPDATE chat_members SET read_seq = 4 WHERE chat_id = 1 AND user_id = 1"
    )
    outcome, events, stored = asyncio.run(_send_while_locked(pg_database_url, ada_sends))

    assert outcome.message.seq == 5
    assert [row["seq"] for row in stored] == [1, 2, 3, 4, 5]
    assert events.reads == [(1, 2, 5, 4)]
