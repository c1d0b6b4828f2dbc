"""Sends stored in batches: one transaction for many, with every guarantee of a send on its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from tests.conftest import fetch, make_settings
from windi_chat.database import create_db_config
from windi_chat.errors import (
    ChatNotFoundError,
    DatabaseUnavailableError,
    InvalidMessageError,
    UnavailableError,
)
from windi_chat.events import EventBus, split_event
from windi_chat.message_batch import Pending
from windi_chat.messaging import Sent, send_messages
from windi_chat.writer import MessageWriter

ADA, BOB, CY = 1, 2, 3


async def _seed(url: str) -> None:
    """Ada and Bob in private chat 1; Ada, Bob and Cy in group 2; nobody has sent anything."""
    config = create_db_config(make_settings(url))
    engine = config.get_engine()
    # PostgreSQL's identity columns take given ids only when told to.
    values = "OVERRIDING SYSTEM VALUE VALUES" if engine.dialect.name == "postgresql" else "VALUES"
    now = "CURRENT_TIMESTAMP"
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    f"INSERT INTO users (id, name, email, password_hash, created_at) {values} "
                    f"(1, 'Ada', 'ada@example.com', 'x', {now}), (2, 'Bob', 'bob@example.com', 'x', {now}), "
                    f"(3, 'Cy', 'cy@example.com', 'x', {now})"
                )
            )
            await connection.execute(
                text(
                    f"INSERT INTO chats (id, type, created_at, last_seq, last_activity_at) {values} "
                    f"(1, 'private', {now}, 0, {now}), (2, 'group', {now}, 0, {now})"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO chat_members (chat_id, user_id, role, joined_at, read_seq) VALUES "
                    "(1, 1, 'member', CURRENT_TIMESTAMP, 0), (1, 2, 'member', CURRENT_TIMESTAMP, 0), "
                    "(2, 1, 'owner', CURRENT_TIMESTAMP, 0), (2, 2, 'member', CURRENT_TIMESTAMP, 0), "
                    "(2, 3, 'member', CURRENT_TIMESTAMP, 0)"
                )
            )
            if engine.dialect.name == "postgresql":
                # Later tests on the same database register people: their ids must come after these.
                await connection.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), 3)"))
                await connection.execute(text("SELECT setval(pg_get_serial_sequence('chats', 'id'), 2)"))
    finally:
        await engine.dispose()


class Recorder:
    """An EventBus whose publishing keeps each frame, decoded."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.bus = EventBus(lambda payload, _channel: self.frames.append(json.loads(split_event(payload)[2])))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == kind]


def _run(url: str, work: Callable[[Any, Recorder], Awaitable[Any]]) -> tuple[Any, Recorder]:
    async def main() -> Any:
        await _seed(url)
        config = create_db_config(make_settings(url))
        try:
            return await work(config.create_session_maker(), recorder)
        finally:
            await config.get_engine().dispose()

    recorder = Recorder()
    return asyncio.run(main()), recorder


async def _batch(sessions: Any, recorder: Recorder, sends: list[Pending]) -> list[Any]:
    async with sessions() as session:
        return await send_messages(session, recorder.bus, sends)


def test_repeats_inside_a_batch_and_across_batches_store_one_row_each(database_url: str) -> None:
    async def work(sessions: Any, recorder: Recorder) -> tuple[list[Any], list[Any]]:
        first = await _batch(
            sessions,
            recorder,
            [
                Pending(1, ADA, "a", "one"),
                Pending(1, ADA, "a", "one, sent again"),
                Pending(1, BOB, "a", "Bob's own a"),
                Pending(1, ADA, "b", "two"),
            ],
        )
        second = await _batch(
            sessions, recorder, [Pending(1, ADA, "a", "late retry"), Pending(1, ADA, "c", "3")]
        )
        return first, second

    (first, second), recorder = _run(database_url, work)

    assert [(r.message.seq, r.created) for r in first] == [(1, True), (1, False), (2, True), (3, True)]
    assert first[1].message.id == first[0].message.id
    assert first[1].message.text == "one"
    assert [(r.message.seq, r.created) for r in second] == [(1, False), (4, True)]
    assert second[0].message.text == "one"
    rows = fetch(database_url, "SELECT seq, sender_id, client_id, text FROM messages ORDER BY seq")
    assert rows == [
        (1, ADA, "a", "one"),
        (2, BOB, "a", "Bob's own a"),
        (3, ADA, "b", "two"),
        (4, ADA, "c", "3"),
    ]
    assert fetch(database_url, "SELECT last_seq FROM chats WHERE id = 1") == [(4,)]
    assert [frame["message"]["seq"] for frame in recorder.of_type("message")] == [1, 2, 3, 4]


def test_a_batch_across_chats_numbers_each_chat_on_its_own(database_url: str) -> None:
    sends = [
        Pending(2, CY, "g1", "group 1"),
        Pending(1, ADA, "p1", "private 1"),
        Pending(2, BOB, "g2", "group 2"),
    ]

    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        return await _batch(sessions, recorder, sends)

    results, recorder = _run(database_url, work)

    assert [(r.message.chat_id, r.message.seq) for r in results] == [(2, 1), (1, 1), (2, 2)]
    assert fetch(database_url, "SELECT id, last_seq FROM chats ORDER BY id") == [(1, 1), (2, 2)]
    by_chat = [(f["message"]["chat_id"], f["message"]["seq"]) for f in recorder.of_type("message")]
    assert [seq for chat, seq in by_chat if chat == 2] == [1, 2]


def test_a_non_member_in_a_batch_fails_alone(database_url: str) -> None:
    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        return await _batch(
            sessions,
            recorder,
            [Pending(1, ADA, "a", "hi"), Pending(1, CY, "x", "not mine"), Pending(1, BOB, "b", "hello")],
        )

    results, _ = _run(database_url, work)

    assert isinstance(results[1], ChatNotFoundError)
    assert [results[0].message.seq, results[2].message.seq] == [1, 2]
    assert fetch(database_url, "SELECT count(*) FROM messages WHERE sender_id = 3") == [(0,)]


def test_a_batch_announces_one_read_event_per_chat_with_the_final_all_read_seq(database_url: str) -> None:
    # Bob, then Ada, then Bob again: the batch leaves both markers at or past seq 2.
    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        return await _batch(
            sessions,
            recorder,
            [Pending(1, BOB, "1", "one"), Pending(1, ADA, "2", "two"), Pending(1, BOB, "3", "three")],
        )

    results, recorder = _run(database_url, work)

    assert [r.message.read for r in results] == [True, True, False]
    assert recorder.of_type("read") == [
        {"type": "read", "chat_id": 1, "user_id": BOB, "seq": 3, "all_read_seq": 2}
    ]
    assert fetch(database_url, "SELECT user_id, read_seq FROM chat_members WHERE chat_id = 1 ORDER BY 1") == [
        (ADA, 2),
        (BOB, 3),
    ]


def test_concurrent_sends_through_the_writer_are_stored_gap_free(database_url: str) -> None:
    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        writer = MessageWriter(sessions, recorder.bus, max_batch=8)
        sends = [
            writer.send(1 + index % 2, [ADA, BOB][index % 2], f"c-{index % 30}", f"text {index}")
            for index in range(60)
        ]
        try:
            return await asyncio.gather(*sends, return_exceptions=True)
        finally:
            await writer.close()

    results, recorder = _run(database_url, work)

    assert all(isinstance(result, Sent) for result in results)
    assert sum(result.created for result in results) == 30  # each key twice: once stored, once a repeat
    for chat_id in (1, 2):
        seqs = [seq for (seq,) in fetch(database_url, f"SELECT seq FROM messages WHERE chat_id = {chat_id}")]  # noqa: S608
        assert sorted(seqs) == list(range(1, 16))
        delivered = [
            f["message"]["seq"] for f in recorder.of_type("message") if f["message"]["chat_id"] == chat_id
        ]
        assert delivered == list(range(1, 16))  # published in seq order


def test_sends_cut_off_by_the_database_all_fail_and_the_next_one_works(pg_database_url: str) -> None:
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def work(sessions: Any, recorder: Recorder) -> tuple[list[Any], Any]:
        writer = MessageWriter(sessions, recorder.bus)
        locker, watcher = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("SELECT 1 FROM chats WHERE id = 1 FOR UPDATE")
            sends = [asyncio.ensure_future(writer.send(1, ADA, f"cut-{i}", "lost?")) for i in range(3)]
            mine = [locker.get_server_pid(), watcher.get_server_pid()]
            others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> ALL($1)"
            for _ in range(200):  # until the writer has tried (and found the chat held)
                if await watcher.fetch(others, mine):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the writer never reached the database")
            # Its connections go away, as in a failover, while the sends wait for their chat.
            for row in await watcher.fetch(others, mine):
                await watcher.execute("SELECT pg_terminate_backend($1)", row["pid"])
            await transaction.rollback()
            failed = await asyncio.gather(*sends, return_exceptions=True)
            after = await writer.send(1, ADA, "after", "still here")
            return failed, after
        finally:
            await locker.close()
            await watcher.close()
            await writer.close()

    (failed, after), recorder = _run(pg_database_url, work)

    assert all(isinstance(result, DatabaseUnavailableError) for result in failed), failed
    assert (after.message.seq, after.created) == (1, True)
    assert fetch(pg_database_url, "SELECT client_id FROM messages") == [("after",)]
    assert [f["message"]["client_id"] for f in recorder.of_type("message")] == ["after"]


def test_a_member_removed_while_their_sends_wait_stores_none_of_them(pg_database_url: str) -> None:
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        writer = MessageWriter(sessions, recorder.bus)
        locker = await asyncpg.connect(dsn)
        try:
            # The group's row is held, so none of the sends can be stored before the removal commits.
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("SELECT 1 FROM chats WHERE id = 2 FOR UPDATE")
            sends = [
                asyncio.ensure_future(writer.send(2, CY, f"queued-{i}", "still here?")) for i in range(3)
            ]
            sends.append(asyncio.ensure_future(writer.send(2, BOB, "bob", "I stay")))
            await locker.execute("DELETE FROM chat_members WHERE chat_id = 2 AND user_id = 3")
            await transaction.commit()
            return await asyncio.gather(*sends, return_exceptions=True)
        finally:
            await locker.close()
            await writer.close()

    results, recorder = _run(pg_database_url, work)

    assert all(isinstance(result, ChatNotFoundError) for result in results[:3]), results
    assert (results[3].message.seq, results[3].created) == (1, True)
    assert fetch(pg_database_url, "SELECT sender_id, seq FROM messages") == [(BOB, 1)]
    assert [f["message"]["sender_id"] for f in recorder.of_type("message")] == [BOB]


def test_a_send_the_database_could_not_store_is_refused_before_it_joins_a_batch(database_url: str) -> None:
    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        writer = MessageWriter(sessions, recorder.bus)
        try:
            return await asyncio.gather(
                writer.send(1, ADA, "nul", "a\u0000b"),
                writer.send(1, BOB, "fine", "hello"),
                return_exceptions=True,
            )
        finally:
            await writer.close()

    (refused, stored), _ = _run(database_url, work)

    assert isinstance(refused, InvalidMessageError)
    assert (stored.message.seq, stored.created) == (1, True)


def test_a_chat_held_by_another_transaction_holds_up_only_its_own_sends(pg_database_url: str) -> None:
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def work(sessions: Any, recorder: Recorder) -> tuple[bool, Any, Any]:
        writer = MessageWriter(sessions, recorder.bus)
        locker = await asyncpg.connect(dsn)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("SELECT 1 FROM chats WHERE id = 1 FOR UPDATE")
            held = asyncio.ensure_future(writer.send(1, ADA, "held", "waits for its chat"))
            free = await writer.send(2, CY, "free", "goes ahead")
            held_was_waiting = not held.done()
            await transaction.commit()
            return held_was_waiting, free, await held
        finally:
            await locker.close()
            await writer.close()

    (held_was_waiting, free, held), recorder = _run(pg_database_url, work)

    assert held_was_waiting
    assert (free.message.chat_id, free.message.seq) == (2, 1)
    assert (held.message.chat_id, held.message.seq, held.created) == (1, 1, True)
    assert [f["message"]["client_id"] for f in recorder.of_type("message")] == ["free", "held"]


def test_a_closing_writer_gives_up_on_a_chat_held_past_its_patience(pg_database_url: str) -> None:
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def work(sessions: Any, recorder: Recorder) -> tuple[Any, Any]:
        writer = MessageWriter(sessions, recorder.bus)
        locker = await asyncpg.connect(dsn)
        try:
            async with locker.transaction():
                await locker.execute("SELECT 1 FROM chats WHERE id = 1 FOR UPDATE")
                held = asyncio.ensure_future(writer.send(1, ADA, "held", "waits for its chat"))
                stored = await writer.send(2, CY, "free", "goes ahead")
                # Shutdown while the chat is still held: it ends, and the held send is refused.
                await writer.close(patience=0.2)
                outcome = (await asyncio.gather(held, return_exceptions=True))[0]
            return stored, outcome
        finally:
            await locker.close()

    (stored, outcome), recorder = _run(pg_database_url, work)

    assert stored.created
    assert isinstance(outcome, UnavailableError)
    assert [f["message"]["client_id"] for f in recorder.of_type("message")] == ["free"]
    assert fetch(pg_database_url, "SELECT count(*) FROM messages WHERE chat_id = 1")[0][0] == 0


def test_a_chat_id_beyond_64_bits_fails_alone(database_url: str) -> None:
    async def work(sessions: Any, recorder: Recorder) -> list[Any]:
        writer = MessageWriter(sessions, recorder.bus)
        try:
            return await asyncio.gather(
                writer.send(2**63, ADA, "huge", "nowhere"),
                writer.send(1, BOB, "fine", "hello"),
                return_exceptions=True,
            )
        finally:
            await writer.close()

    (refused, stored), _ = _run(database_url, work)

    assert isinstance(refused, ChatNotFoundError)
    assert (stored.message.seq, stored.created) == (1, True)


def test_a_writer_batch_answers_every_kind_of_send_in_its_place(database_url: str) -> None:
    """A batch through the writer holding a chat that does not exist, a non-member, a repeat of a
    message with a reaction, and new sends: each gets its own answer, and the rest are stored."""

    async def work(sessions: Any, recorder: Recorder) -> tuple[list[Any], int]:
        first = await _batch(sessions, recorder, [Pending(1, ADA, "old", "stored before")])
        async with sessions() as session:
            await session.execute(
                text(
                    "INSERT INTO message_reactions (chat_id, seq, emoji, user_id, rev) "
                    "VALUES (1, 1, '👍', 2, 2)"
                )
            )
            await session.commit()
        writer = MessageWriter(sessions, recorder.bus)
        try:
            results = await asyncio.gather(
                writer.send(999, ADA, "nowhere", "no such chat"),
                writer.send(1, CY, "stranger", "not a member"),
                writer.send(1, ADA, "old", "a resend"),
                writer.send(2, BOB, "new", "fresh"),
                writer.send(1, BOB, "new", "fresh too"),
                return_exceptions=True,
            )
            stuck = 0
            if database_url.startswith("postgresql"):  # no connection is left inside a transaction
                async with sessions() as session:
                    stuck = await session.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
                        )
                    )
            return [first, *results], stuck
        finally:
            await writer.close()

    ((_, nowhere, stranger, repeat, group, private), stuck), recorder = _run(database_url, work)

    assert isinstance(nowhere, ChatNotFoundError)
    assert isinstance(stranger, ChatNotFoundError)
    assert (repeat.message.seq, repeat.created, repeat.message.text) == (1, False, "stored before")
    assert [(r.emoji, r.user_ids) for r in repeat.message.reactions] == [("👍", [BOB])]
    assert (group.message.chat_id, group.message.seq, group.created) == (2, 1, True)
    assert (private.message.chat_id, private.message.seq, private.created) == (1, 2, True)
    assert [f["message"]["client_id"] for f in recorder.of_type("message")] == ["old", "new", "new"]
    assert fetch(database_url, "SELECT chat_id, seq, client_id FROM messages ORDER BY chat_id, seq") == [
        (1, 1, "old"),
        (1, 2, "new"),
        (2, 1, "new"),
    ]
    assert stuck == 0


def test_the_writer_gives_its_connection_back_once_its_queue_runs_dry(pg_database_url: str) -> None:
    """The writer holds one pool connection while batches follow each other, and no longer."""

    async def work(sessions: Any, recorder: Recorder) -> tuple[int, int]:
        pool = sessions.kw["bind"].sync_engine.pool
        writer = MessageWriter(sessions, recorder.bus, max_batch=8)
        try:
            sends = (writer.send(1 + index % 2, ADA, f"dry-{index}", "hello") for index in range(50))
            sent = await asyncio.gather(*sends)
            for _ in range(500):  # it lets go once its last batch is answered
                if pool.checkedout() == 0:
                    break
                await asyncio.sleep(0.01)
            return len(sent), pool.checkedout()
        finally:
            await writer.close()

    (count, checked_out), _ = _run(pg_database_url, work)
    assert (count, checked_out) == (50, 0)


def test_a_writer_that_keeps_storing_shares_a_full_pool_between_batches(pg_database_url: str) -> None:
    """With every connection of the pool out, the writer gives its own back after each batch, so a
    request waiting for one gets it while sends keep coming."""

    async def main() -> tuple[int | None, list[Any]]:
        await _seed(pg_database_url)
        settings = make_settings(pg_database_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=5)
        config = create_db_config(settings)
        sessions = config.create_session_maker()
        writer = MessageWriter(sessions, Recorder().bus, max_batch=4, pool_limit=1)
        sent: list[asyncio.Future[Sent]] = []
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():  # always a few sends waiting, never many
                if sum(1 for future in sent[-16:] if not future.done()) < 8:
                    sent.extend(writer.submit(1, ADA, f"flood-{len(sent)}", "hello") for _ in range(4))
                await asyncio.sleep(0)

        flooding = asyncio.ensure_future(flood())
        try:
            await asyncio.sleep(0)  # the flood's first sends
            await asyncio.wait_for(asyncio.shield(sent[0]), 10)  # the writer is storing
            async with sessions() as session:  # the pool's one connection, between two batches
                answer = await session.scalar(text("SELECT 1"))
        finally:
            stop.set()
            await flooding
            results = await asyncio.gather(*sent, return_exceptions=True)
            await writer.close()
            await config.get_engine().dispose()
        return answer, results

    answer, results = asyncio.run(main())
    assert answer == 1
    assert results
    assert all(isinstance(result, Sent) for result in results)


def test_a_repeat_through_the_writer_is_answered_with_a_pool_of_one_connection(pg_database_url: str) -> None:
    """A repeat's reactions are read in a session of their own: the writer lets its connection go first."""

    async def main() -> tuple[Sent, Sent]:
        await _seed(pg_database_url)
        settings = make_settings(pg_database_url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=5)
        config = create_db_config(settings)
        writer = MessageWriter(config.create_session_maker(), Recorder().bus, pool_limit=1)
        try:
            return await writer.send(1, ADA, "once", "hello"), await writer.send(1, ADA, "once", "hello")
        finally:
            await writer.close()
            await config.get_engine().dispose()

    first, repeat = asyncio.run(main())
    assert (first.created, repeat.created) == (True, False)
    assert repeat.message.id == first.message.id
