"""``GET /health/ready``: whether this process should get traffic, for orchestrators and load balancers.

``/health`` says whether the database answers; readiness also needs live delivery, so that a process
whose channels backend (Redis, LISTEN) is cut is taken out of rotation instead of refusing sockets.
Delivery counts as working once an event this process published has come back through the backend
(the session gate's probe), which is the only proof that both directions work.
"""

from __future__ import annotations

import logging
from typing import Literal

import anyio
from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from windi_chat.database import unavailable_cause
from windi_chat.http_errors import DATABASE_ERRORS, RETRY_AFTER_SECONDS
from windi_chat.revocations import SessionGate
from windi_chat.sockets import SocketRegistry

__all__ = ("ReadyOut", "ready")

logger = logging.getLogger("windi_chat.readiness")

# Orchestrators time their probes out after a few seconds: answer well within that.
DATABASE_TIMEOUT_SECONDS = 2.0
DELIVERY_TIMEOUT_SECONDS = 1.0

Check = Literal["ok", "unavailable"]


class ReadyOut(Struct):
    status: Literal["ready", "not_ready"]
    database: Check
    delivery: Check
    open_sockets: int  # of the process that answered, for `windi-chat stats`


async def _database_answers(engine: AsyncEngine) -> bool:
    try:
        with anyio.fail_after(DATABASE_TIMEOUT_SECONDS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except (TimeoutError, *DATABASE_ERRORS) as exc:
        logger.warning("Readiness: database unavailable: %s", unavailable_cause(exc))
        return False
    return True


@get(
    "/health/ready",
    operation_id="ready",
    tags=["service"],
    summary="Should this process get traffic? (database and live delivery)",
    security=[{}],
    opt={"exclude_from_auth": True},
)
async def ready(
    db_engine: NamedDependency[AsyncEngine],
    gate: NamedDependency[SessionGate],
    registry: NamedDependency[SocketRegistry],
) -> Response[ReadyOut]:
    """200 when the database answers and live delivery works; 503, naming what does not, otherwise."""
    database = await _database_answers(db_engine)
    delivery = False
    with anyio.move_on_after(DELIVERY_TIMEOUT_SECONDS):
        await gate.confirm_delivery()
        delivery = True
    if not delivery:
        logger.warning("Readiness: live delivery is not confirmed")
    body = ReadyOut(
        status="ready" if database and delivery else "not_ready",
        database="ok" if database else "unavailable",
        delivery="ok" if delivery else "unavailable",
        open_sockets=len(registry),
    )
    if body.status == "ready":
        return Response(body)
    return Response(
        body, status_code=HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )
