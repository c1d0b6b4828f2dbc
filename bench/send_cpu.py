"""CPU per send in-process, without sockets: where the database part of a message's cost goes.

``python -m bench.send_cpu [N]`` stores N messages against a fresh bench database in batches of 1, 8, 64
and 256: through the action on a session (``send_messages``: the lock and batch statements, the commit,
the answers and events), through the writer's path (``pg_batch``: the same statements on the driver's
connection as one function call, then the same answers and events), and through the same two
statements on bare asyncpg, so the layers' costs can be told apart.
"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from bench.procs import DB_DSN, reset_database
from windi_chat.batch_sql import STORE_BATCH_POSTGRES
from windi_chat.config import Settings
from windi_chat.database import create_db_config, migrate
from windi_chat.events import EventBus, discard
from windi_chat.message_batch import Pending, batch_parameters
from windi_chat.messaging import batch_results, send_messages
from windi_chat.models import utcnow
from windi_chat.pg_batch import store_batch

URL = DB_DSN.replace("postgresql://", "postgresql+asyncpg://")


def bench_config() -> SQLAlchemyAsyncConfig:
    return create_db_config(Settings(database_url=URL, jwt_secret="x" * 48))


async def fresh_database(config: SQLAlchemyAsyncConfig) -> None:
    """The bench database, empty but for one chat of two members (every run stores new client ids)."""
    await reset_database()
    await migrate(config.get_engine())
    await _seed()


async def _seed() -> None:
    connection = await asyncpg.connect(DB_DSN)
    try:
        await connection.execute(
            "INSERT INTO users (name, email, password_hash, created_at) "
            "VALUES ('Ada', 'ada@example.com', 'x', now()), ('Bob', 'bob@example.com', 'x', now());"
            "INSERT INTO chats (type, created_at, last_seq, last_activity_at) "
            "VALUES ('private', now(), 0, now());"
            "INSERT INTO chat_members (chat_id, user_id, role, joined_at, read_seq) "
            "VALUES (1, 1, 'member', now(), 0), (1, 2, 'member', now(), 0)"
        )
    finally:
        await connection.close()


def _per_message(started: float, count: int) -> str:
    return f"{1e6 * (time.process_time() - started) / count:7.0f} µs CPU per message"


def _sends(batch: int, start: int, tag: str) -> list[Pending]:
    return [Pending(1, 1 + index % 2, f"{tag}-{index}", "hello") for index in range(start, start + batch)]


async def main(count: int) -> None:
    config = bench_config()
    await fresh_database(config)
    sessions, events = config.create_session_maker(), EventBus(discard)  # publishing is not measured
    for index in range(0, 400, 8):  # warm the statement caches
        async with sessions() as session:
            await send_messages(session, events, _sends(8, index, "warm"))

    lock = "SELECT id FROM chats WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    compiled = STORE_BATCH_POSTGRES.compile(dialect=asyncpg_dialect())
    store, order = str(compiled), list(compiled.positiontup or ())
    pool = await asyncpg.create_pool(DB_DSN, min_size=1, max_size=1)
    for batch in (1, 8, 64, 256):
        started = time.process_time()
        for index in range(0, count, batch):
            async with sessions() as session:
                await send_messages(session, events, _sends(batch, index, f"session-{batch}"))
        print(f"batch {batch:>3}: send_messages (Session)  {_per_message(started, count)}")
        started = time.process_time()
        async with config.get_engine().connect() as connection:  # held, as the writer does under load
            for index in range(0, count, batch):
                stored = await store_batch(connection, _sends(batch, index, f"writer-{batch}"), utcnow())
                batch_results(stored, {})
        print(f"batch {batch:>3}: writer (pg_batch)        {_per_message(started, count)}")
        started = time.process_time()
        for index in range(0, count, batch):
            sends = _sends(batch, index, f"bare-{batch}")
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(lock, [1])
                parameters = batch_parameters(sends, utcnow())
                await connection.fetch(store, *(parameters[name] for name in order))
        print(f"batch {batch:>3}: same statements (asyncpg) {_per_message(started, count)}")
    await pool.close()
    await config.get_engine().dispose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2048))
