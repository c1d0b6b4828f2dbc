"""The writer's batches on PostgreSQL: one round trip each, on the driver's own connection, no ORM.

Every round trip of a batch ends in a wait for the event loop, which under load is busy with hundreds
of sockets; the writer stores one batch at a time, so these waits bound how many messages a second the
process can store and how long each waits for its ack. Here a batch is one call of a function, in its
own implicit transaction, which the server commits before it answers: the lock of the batch's chats'
rows, then the batch statement (``STORE_BATCH_POSTGRES``, the one a session runs). The same steps as
separate statements took three round trips (``BEGIN`` and the lock, the statement, ``COMMIT``), and a
session four.

The connection comes from the application's pool, so it shares its limits and its recovery: a
connection that broke is dropped from the pool, and a database that cannot be reached surfaces as
:class:`~windi_chat.errors.DatabaseUnavailableError`, as in every other action.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import TextClause

from windi_chat.batch_sql import LOCK_FREE_CHATS, STORE_BATCH_POSTGRES
from windi_chat.database import is_unavailable, unavailable_as_domain_error
from windi_chat.errors import DatabaseUnavailableError
from windi_chat.message_batch import Batch, Pending, batch_of, batch_parameters

__all__ = ("connect", "store_batch")


# Within the function, the lock comes first and the batch statement after it, so that the statement's
# snapshot (each statement of a volatile function takes its own) sees every marker and membership as
# the lock's last holders left them. Chats held by another transaction are left out, as ``held``. The
# function is temporary: it lives as long as its connection and is created by the first batch through
# it, so it needs no migration and always matches this code.
#
# Its plan is made once per connection (``force_generic_plan``) and reads every table through an index
# (``enable_seqscan = off``). Planning the batch statement each call cost more than running it, about a
# millisecond of the database's CPU per batch, wherever the planner's statistics made the generic plan
# look dearer than a fresh one (a database that is never analyzed, for one). A plan made once must not
# depend on those statistics either: made while ``messages`` is small, it would scan the table whole, and
# go on doing so as the table grows. Every lookup here has an index on the chat's key.
_ARGUMENTS = {"chats": "$1", "senders": "$2", "clients": "$3", "bodies": "$4", "replies": "$5", "now": "$6"}
_ORDER = tuple(_ARGUMENTS)


def _in_function(statement: TextClause) -> str:
    """A statement's text with its parameters as the function's arguments (``:busy``: its ``held``)."""
    names = {**_ARGUMENTS, "busy": "held"}
    return re.sub(r"(?<![:\w]):(\w+)", lambda match: names[match[1]], statement.text)


_FUNCTION = f"""
CREATE OR REPLACE FUNCTION pg_temp.windi_store_batch(
    bigint[], bigint[], text[], text[], bigint[], timestamptz
) RETURNS TABLE (
    idx bigint, first_idx bigint, member boolean, old_id bigint, old_seq bigint, old_text text,
    old_created_at timestamptz, old_rev bigint, old_reply_to bigint, old_edited_at timestamptz,
    old_deleted boolean, new_id bigint, new_seq bigint, new_rev bigint, before bigint, after bigint,
    busy boolean
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $windi$
#variable_conflict use_column
DECLARE
    held bigint[] := '{{}}';
    taken integer;
BEGIN
    SELECT count(*) INTO taken FROM (SELECT 1 FROM chats WHERE id = ANY($1) FOR UPDATE SKIP LOCKED) AS l;
    IF taken < cardinality(ARRAY(SELECT DISTINCT unnest($1))) THEN
        held := ARRAY({_in_function(LOCK_FREE_CHATS)});
    END IF;
    RETURN QUERY {_in_function(STORE_BATCH_POSTGRES)};
END
$windi$
"""  # noqa: S608 - built from constant statements only
_CALL = "SELECT * FROM pg_temp.windi_store_batch($1, $2, $3, $4, $5, $6)"
# The driver connections that have the function.
_PREPARED: weakref.WeakSet[Any] = weakref.WeakSet()


async def connect(engine: AsyncEngine) -> AsyncConnection:
    """A connection from the pool for the writer, which holds it while sends keep coming."""
    with unavailable_as_domain_error():
        return await engine.connect().start()


async def store_batch(connection: AsyncConnection, sends: Sequence[Pending], now: datetime) -> Batch:
    """Store ``sends`` and commit; one outcome per send, None for a send whose chat's row another
    transaction holds (it was not stored now)."""
    with unavailable_as_domain_error():
        return await _store_and_commit(connection, sends, now)


async def _store_and_commit(connection: AsyncConnection, sends: Sequence[Pending], now: datetime) -> Batch:
    driver: Any = (await connection.get_raw_connection()).driver_connection
    try:
        if driver not in _PREPARED:
            await driver.execute(_FUNCTION)
            _PREPARED.add(driver)
        parameters = batch_parameters(sends, now)
        rows = await driver.fetch(_CALL, *(parameters[name] for name in _ORDER))
    except Exception as exc:
        # "connection is closed" carries no SQLSTATE to tell it by; a backend that was shut down or
        # terminated says so (57P01) before its socket closes, and the driver still counts the call as
        # running: a rollback on it would fail in the pool.
        if driver.is_closed() or is_unavailable(exc):
            await connection.invalidate()
            raise DatabaseUnavailableError from exc
        raise  # the server rolled the call back; the connection is as it was
    except BaseException:  # cancelled, perhaps in the middle of the call
        await connection.invalidate()
        raise
    return batch_of(sends, rows, now)
