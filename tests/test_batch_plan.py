"""The batch function on PostgreSQL: its plan, made once per connection and never a scan of a table, and
the connection the writer stores through.

The plan is made while the tables may be empty and unanalyzed (a fresh install, a database whose
statistics are never gathered), and kept as they grow: a plan that scanned ``messages`` whole would get
slower with every message stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import make_settings
from tests.test_batches import ADA, BOB, _seed
from windi_chat import pg_batch
from windi_chat.database import create_db_config
from windi_chat.events import EventBus, discard
from windi_chat.message_batch import Pending
from windi_chat.models import utcnow
from windi_chat.writer import MessageWriter

pytestmark = pytest.mark.postgres

# Each backend that stored a batch has the writer's function, in a temporary schema of its own.
_FUNCTIONS = "SELECT count(*) FROM pg_proc WHERE proname = 'windi_store_batch'"


def test_the_batch_statement_reads_every_table_through_an_index(pg_database_url: str) -> None:
    async def main() -> list[str]:
        await _seed(pg_database_url)
        config = create_db_config(make_settings(pg_database_url))
        plans: list[str] = []
        try:
            async with config.get_engine().connect() as connection:
                driver: Any = (await connection.get_raw_connection()).driver_connection
                # The server writes the plan of every statement the function runs, as a notice to us.
                await driver.execute(
                    "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                    "SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice"
                )
                driver.add_log_listener(lambda _connection, message: plans.append(message.message))
                # More calls than the server plans afresh before it settles on a plan of its own.
                for index in range(8):
                    sends = [Pending(1, ADA, f"plan-{index}", "hi"), Pending(2, BOB, f"plan-{index}", "hi")]
                    await pg_batch.store_batch(connection, sends, utcnow())
        finally:
            await config.get_engine().dispose()
        return plans

    plans = [plan for plan in asyncio.run(main()) if "Insert on messages" in plan]
    assert len(plans) == 8
    scans = [line.strip() for plan in plans for line in plan.splitlines() if "Seq Scan" in line]
    assert scans == []


def test_the_writer_goes_back_to_the_connection_it_last_gave_back(pg_database_url: str) -> None:
    """The pool hands out the connection returned last, so a writer whose queue keeps running dry stays
    on one warm backend, with its function and plan, rather than going round every connection."""

    async def main() -> int:
        await _seed(pg_database_url)
        config = create_db_config(make_settings(pg_database_url, db_pool_size=4, db_max_overflow=0))
        engine = config.get_engine()
        writer = MessageWriter(config.create_session_maker(), EventBus(discard))
        try:
            async with contextlib.AsyncExitStack() as stack:  # four idle connections in the pool
                for _ in range(4):
                    connection = await stack.enter_async_context(engine.connect())
                    await connection.execute(text("SELECT 1"))
            for index in range(8):  # one at a time: the queue runs dry after each
                await writer.send(1, ADA, f"alone-{index}", "hi")
            async with engine.connect() as connection:
                return int(await connection.scalar(text(_FUNCTIONS)) or 0)
        finally:
            await writer.close()
            await engine.dispose()

    assert asyncio.run(main()) == 1
