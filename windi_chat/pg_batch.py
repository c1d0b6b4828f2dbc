"""The writer's batches on PostgreSQL, on the driver's own connection: three round trips, no ORM.

Every round trip of a batch ends in a wait for the event loop, which under load is busy with hundreds
of sockets; the writer stores one batch at a time, so these waits bound how many messages a second
the process can store and how long each waits for its ack. Here a batch costs three: ``BEGIN`` and
the lock of its chats' rows in one simple query, the batch statement (``STORE_BATCH_POSTGRES``, the
same one a session runs), and ``COMMIT``. A session would add a fourth (its own ``BEGIN``) and the
ORM's work on every statement and row.

The connection comes from the application's pool, so it shares its limits and its recovery: a
connection that broke is dropped from the pool, and a database that cannot be reached surfaces as
:class:`~windi_chat.errors.DatabaseUnavailableError`, as in every other action.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import TextClause

from windi_chat.database import is_unavailable
from windi_chat.errors import DatabaseUnavailableError
from windi_chat.message_batch import (
    LOCK_FREE_CHATS,
    STORE_BATCH_POSTGRES,
    Batch,
    Pending,
    batch_of,
    batch_parameters,
)

__all__ = ("store_batch",)


def _for_driver(statement: TextClause) -> tuple[str, list[str]]:
    """A statement as the driver takes it (``$1``...), and the names of its parameters in that order."""
    compiled = statement.compile(dialect=asyncpg_dialect())  # type: ignore[no-untyped-call]
    return str(compiled), list(compiled.positiontup or ())


_STORE, _STORE_ORDER = _for_driver(STORE_BATCH_POSTGRES)
_LOCK_FREE, _ = _for_driver(LOCK_FREE_CHATS)
# Chat ids are integers the writer checked, so they can be written into the query itself: a simple
# query carries several statements in one round trip, where a query with parameters carries one.
_BEGIN_AND_LOCK = "BEGIN; SELECT 1 FROM chats WHERE id IN ({}) FOR UPDATE SKIP LOCKED"


async def store_batch(engine: AsyncEngine, sends: Sequence[Pending], now: datetime) -> Batch:
    """Store ``sends`` and commit; one outcome per send, None for a send whose chat's row another
    transaction holds (it was not stored now)."""
    try:
        async with engine.connect() as connection:
            return await _store_and_commit(connection, sends, now)
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailableError from exc
        raise


async def _store_and_commit(connection: AsyncConnection, sends: Sequence[Pending], now: datetime) -> Batch:
    driver: Any = (await connection.get_raw_connection()).driver_connection
    # The pool knows nothing of this transaction: it must not get the connection back inside it.
    try:
        batch = await _store(driver, sends, now)
        await driver.execute("COMMIT")
    except Exception as exc:
        if driver.is_closed():  # "connection is closed" carries no SQLSTATE to tell it by
            await connection.invalidate()
            raise DatabaseUnavailableError from exc
        try:
            await driver.execute("ROLLBACK")
        except Exception:
            await connection.invalidate()
        raise
    except BaseException:  # cancelled, perhaps in the middle of a statement
        await connection.invalidate()
        raise
    return batch


async def _store(driver: Any, sends: Sequence[Pending], now: datetime) -> Batch:
    chats = sorted({send.chat_id for send in sends})
    status = await driver.execute(_BEGIN_AND_LOCK.format(",".join(str(int(chat)) for chat in chats)))
    busy: set[int] = set()
    if int(status.rpartition(" ")[2]) < len(chats):
        # Some chat is held elsewhere, or names no chat: which ones are held (this transaction's own
        # locks do not count). A send to a chat that does not exist is answered by the batch statement.
        busy = {row[0] for row in await driver.fetch(_LOCK_FREE, chats)}
    ready = [index for index, send in enumerate(sends) if send.chat_id not in busy]
    if not ready:
        return Batch.of_ready(len(sends), ready, None)
    stored = [sends[index] for index in ready]
    parameters = batch_parameters(stored, now)
    rows = await driver.fetch(_STORE, *(parameters[name] for name in _STORE_ORDER))
    return Batch.of_ready(len(sends), ready, batch_of(stored, rows, now))
