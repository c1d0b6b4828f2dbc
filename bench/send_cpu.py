"""CPU per send in-process, without sockets: where the database part of a message's cost goes.

``python -m bench.send_cpu [N]`` times ``send_message`` sequentially against a fresh bench database, then
the same send statement through a SQLAlchemy Core connection and through bare asyncpg, so the layers'
costs can be told apart on this machine.
"""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import create_async_engine

from bench.procs import DB_DSN, reset_database
from windi_chat.config import Settings
from windi_chat.database import create_db_config, migrate
from windi_chat.events import EventBus, discard
from windi_chat.message_sql import SEND_POSTGRES
from windi_chat.messaging import send_message
from windi_chat.models import utcnow

URL = DB_DSN.replace("postgresql://", "postgresql+asyncpg://")


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


def _per_call(started: float, count: int) -> str:
    return f"{1e6 * (time.process_time() - started) / count:7.0f} µs CPU per send"


async def main(count: int) -> None:
    await reset_database()
    config = create_db_config(Settings(database_url=URL, jwt_secret="x" * 48))
    await migrate(config.get_engine())
    await _seed()
    sessions, events = config.create_session_maker(), EventBus(discard)  # publishing is not measured
    for index in range(100):  # warm the statement caches
        async with sessions() as session:
            await send_message(session, events, 1, 1 + index % 2, f"warm-{index}", "hello")

    started = time.process_time()
    for index in range(count):
        async with sessions() as session:
            await send_message(session, events, 1, 1 + index % 2, f"session-{index}", "hello")
    print(f"send_message (Session)     {_per_call(started, count)}")

    engine = create_async_engine(URL, pool_size=2)
    started = time.process_time()
    for index in range(count):
        async with engine.begin() as connection:
            parameters = {"chat": 1, "sender": 1 + index % 2, "client": f"core-{index}"}
            await connection.execute(SEND_POSTGRES, {**parameters, "body": "hello", "now": utcnow()})
    print(f"same statement (Core)      {_per_call(started, count)}")
    await engine.dispose()

    compiled = SEND_POSTGRES.compile(dialect=asyncpg_dialect())
    numbered, names = str(compiled), compiled.positiontup or []
    pool = await asyncpg.create_pool(DB_DSN, min_size=2, max_size=2)
    started = time.process_time()
    for index in range(count):
        async with pool.acquire() as connection, connection.transaction():
            values = {"chat": 1, "sender": 1 + index % 2, "client": f"bare-{index}"}
            values.update(body="hello", now=utcnow())
            await connection.fetchrow(numbered, *(values.get(name, compiled.params[name]) for name in names))
    print(f"same statement (asyncpg)   {_per_call(started, count)}")
    await pool.close()
    await config.get_engine().dispose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
