"""``GET /health/ready``: whether this process should get traffic, for orchestrators and load balancers.

``/health`` says whether the database answers; readiness also checks live delivery. Delivery counts as
working once an event this process published has come back through the backend (the session gate's
probe), which is the only proof that both directions work. While the backend (Redis, LISTEN) is down
and the process serves its sockets from the database (degraded mode, ``windi_chat.poller``), it still
serves every socket and send, more slowly: readiness says ``degraded`` with a 200, so it stays in
rotation. Only a database that does not answer, or delivery that is neither live nor served by polling,
takes the process out (503).
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
from windi_chat.poller import DeliveryPoller
from windi_chat.revocations import SessionGate
from windi_chat.sockets import SocketRegistry

__all__ = ("ReadyOut", "ready")

logger = logging.getLogger("windi_chat.readiness")

# Orchestrators time their probes out after a few seconds: answer well within that.
DATABASE_TIMEOUT_SECONDS = 2.0
DELIVERY_TIMEOUT_SECONDS = 1.0

Delivery = Literal["ok", "degraded", "unavailable"]


class ReadyOut(Struct):
    status: Literal["ready", "degraded", "not_ready"]
    database: Literal["ok", "unavailable"]
    delivery: Delivery  # degraded: live delivery is down, sockets are served from the database
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
    summary="Should this process get traffic? (database and delivery)",
    security=[{}],
    opt={"exclude_from_auth": True},
)
async def ready(
    db_engine: NamedDependency[AsyncEngine],
    gate: NamedDependency[SessionGate],
    registry: NamedDependency[SocketRegistry],
    poller: NamedDependency[DeliveryPoller],
) -> Response[ReadyOut]:
    """200 ``ready``, or ``degraded`` while sockets are served from the database; 503, naming what
    does not work, when the database does not answer or delivery is neither live nor polled.
    """
    database = await _database_answers(db_engine)
    delivery = await _delivery(gate, poller)
    body = ReadyOut(
        status="not_ready" if not database or delivery == "unavailable" else _STATUS[delivery],
        database="ok" if database else "unavailable",
        delivery=delivery,
        open_sockets=len(registry),
    )
    if body.status != "not_ready":
        return Response(body)
    return Response(
        body, status_code=HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


_STATUS: dict[Delivery, Literal["ready", "degraded"]] = {"ok": "ready", "degraded": "degraded"}


async def _delivery(gate: SessionGate, poller: DeliveryPoller) -> Delivery:
    if poller.degraded:  # the probe would not come back: no need to wait for it
        return "degraded"
    with anyio.move_on_after(DELIVERY_TIMEOUT_SECONDS):
        await gate.confirm_delivery()
        return "ok"
    if poller.degraded:  # the probe's publish found the backend down meanwhile
        return "degraded"
    logger.warning("Readiness: live delivery is not confirmed")
    return "unavailable"
