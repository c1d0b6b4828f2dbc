"""Prometheus metrics at ``/metrics`` (``WINDI_METRICS=true``), or on ``WINDI_METRICS_PORT``.

HTTP requests are counted by Litestar's Prometheus integration (``windi_requests_total`` by path and
status). Our own: open sockets, database connections in use and degraded delivery are read when scraped,
so they cost nothing until then. The rest are counted where things happen, through children bound here
once, so an event costs one increment or observation; while metrics are off (``METERS.on`` is false) the
code that counts checks that attribute and does nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Middleware, Receive, Scope, Send
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = (
    "BATCH_SIZES",
    "DELIVERED",
    "DELIVERY_OUTAGES",
    "DELIVERY_RECONNECTS",
    "LOGIN_FAILURES",
    "MESSAGES_STORED",
    "METERS",
    "REFUSED_FRAMES",
    "REFUSED_READS",
    "REFUSED_SEARCHES",
    "REFUSED_SENDS",
    "SEND_LATENCY_REST",
    "SEND_LATENCY_SOCKET",
    "Metrics",
    "count_delivery",
)

logger = logging.getLogger("windi_chat.metrics")

PREFIX = "windi"


class _Switch:
    """Whether this process counts: set once, when an app with metrics on is built."""

    on: bool = False


METERS = _Switch()

# Module-level: Prometheus names are global to the process, and a process serves one app.
MESSAGES_STORED = Counter(f"{PREFIX}_messages_stored", "Messages stored (repeated client ids not counted)")
BATCH_SIZES = Histogram(
    f"{PREFIX}_send_batch_size",
    "Sends stored per transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
_DELIVERIES = Counter(f"{PREFIX}_deliveries", "Event frames sent to sockets", ["kind"])
# By the event's kind byte (``windi_chat.events``): one dict lookup, no label resolution, per frame.
DELIVERED = {
    ord("M"): _DELIVERIES.labels(kind="message"),
    ord("U"): _DELIVERIES.labels(kind="message_updated"),
    ord("T"): _DELIVERIES.labels(kind="typing"),
    ord("R"): _DELIVERIES.labels(kind="member_removed"),
    ord("-"): _DELIVERIES.labels(kind="other"),
}
_SEND_LATENCY = Histogram(
    f"{PREFIX}_send_latency_seconds",
    "From a send's arrival (socket frame or REST request) to its acknowledgement",
    ["transport"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SEND_LATENCY_SOCKET = _SEND_LATENCY.labels(transport="socket")
SEND_LATENCY_REST = _SEND_LATENCY.labels(transport="rest")
DELIVERY_RECONNECTS = Counter(
    f"{PREFIX}_delivery_reconnects", "Times the delivery backend's event stream was reopened after it broke"
)
DELIVERY_OUTAGES = Counter(
    f"{PREFIX}_delivery_outages", "Times live delivery was lost and sockets were served from the database"
)
LOGIN_FAILURES = Counter(f"{PREFIX}_login_failures", "Password logins refused (401)")
_REFUSALS = Counter(f"{PREFIX}_rate_limit_refusals", "Requests and frames refused by a rate limit", ["kind"])
REFUSED_FRAMES = _REFUSALS.labels(kind="socket_frames")
REFUSED_SENDS = _REFUSALS.labels(kind="sends")
REFUSED_READS = _REFUSALS.labels(kind="reads")
REFUSED_SEARCHES = _REFUSALS.labels(kind="searches")
# 429s of the login and register routes: the per-address limit and the per-account lockout.
_REFUSED_AUTH = {"/login": _REFUSALS.labels(kind="login"), "/register": _REFUSALS.labels(kind="register")}
_OPEN_SOCKETS = Gauge(f"{PREFIX}_open_sockets", "Open WebSockets of this process", ["kind"])
_POOL_IN_USE = Gauge(f"{PREFIX}_db_pool_in_use", "Database connections checked out of the pool")
_DEGRADED = Gauge(f"{PREFIX}_delivery_degraded", "1 while sockets are served from the database, else 0")


class Metrics:
    """What ``create_app`` adds when metrics are on: the HTTP middleware, the route, the gauges."""

    def __init__(
        self,
        port: int,
        open_sockets: Callable[[], int],
        engine: AsyncEngine,
        degraded: Callable[[], bool],
    ) -> None:
        self._port = port
        config = PrometheusConfig(
            app_name="windi_chat", prefix=PREFIX, group_path=True, exclude=["^/metrics$"]
        )
        self.middleware: list[Middleware] = [config.middleware, _count_auth_answers]
        self.route_handlers: list[ControllerRouterHandler] = [] if port else [_MetricsController]
        _OPEN_SOCKETS.labels(kind="chat").set_function(open_sockets)
        pool = engine.sync_engine.pool
        _POOL_IN_USE.set_function(lambda: float(getattr(pool, "checkedout", lambda: 0)()))
        _DEGRADED.set_function(lambda: float(degraded()))
        METERS.on = True

    def start(self) -> None:
        """Serve the metrics on their own port, when one is set (one process per port)."""
        if not self._port:
            return
        try:
            start_http_server(self._port, registry=REGISTRY)
        except OSError as exc:  # another worker process of this host serves it already
            logger.warning("Metrics port %d not opened: %s", self._port, exc)
            return
        logger.info("Metrics served on port %d", self._port)


def count_delivery(kind: int) -> None:
    """Count one event frame sent to a socket, by its kind byte."""
    counter = DELIVERED.get(kind)
    if counter is not None:
        counter.inc()


def _count_auth_answers(app: ASGIApp) -> ASGIApp:
    """Count login failures and the login and register routes' 429s from their answers' status.

    The 401 and the per-account lock's 429 come from the handler, as a response through this ``send``;
    the per-address limit's 429 is raised by its middleware, inside this one, and answered outside it.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        refused = _REFUSED_AUTH.get(scope["path"]) if scope["type"] == ScopeType.HTTP else None
        if refused is None:
            await app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 429:
                    refused.inc()
                elif message["status"] == 401 and scope["path"] == "/login":
                    LOGIN_FAILURES.inc()
            await send(message)

        try:
            await app(scope, receive, counting_send)
        except TooManyRequestsException:
            refused.inc()
            raise

    return middleware


class _MetricsController(PrometheusController):
    """``/metrics`` on the main port, open like ``/health``: keep it off the public internet."""

    path = "/metrics"
    include_in_schema = False
    opt = {"exclude_from_auth": True}
