"""Prometheus metrics at ``/metrics`` (``WINDI_METRICS=true``), or on ``WINDI_METRICS_PORT``.

HTTP requests are counted by Litestar's Prometheus integration (``windi_requests_total`` by path and
status: login failures are ``path="/login", status_code="401"``, rate-limit refusals ``status_code="429"``).
Our own: open sockets and database connections in use are read when scraped, so they cost nothing
until then; messages stored and batch sizes cost one increment each per stored batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ControllerRouterHandler, Middleware
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ("BATCH_SIZES", "MESSAGES_STORED", "Metrics")

logger = logging.getLogger("windi_chat.metrics")

PREFIX = "windi"

# Module-level: Prometheus names are global to the process, and a process serves one app.
MESSAGES_STORED = Counter(f"{PREFIX}_messages_stored", "Messages stored (repeated client ids not counted)")
BATCH_SIZES = Histogram(
    f"{PREFIX}_send_batch_size",
    "Sends stored per transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
_OPEN_SOCKETS = Gauge(f"{PREFIX}_open_sockets", "Open WebSockets of this process", ["kind"])
_POOL_IN_USE = Gauge(f"{PREFIX}_db_pool_in_use", "Database connections checked out of the pool")


class Metrics:
    """What ``create_app`` adds when metrics are on: the HTTP middleware, the route, the gauges."""

    def __init__(self, port: int, open_sockets: Callable[[], int], engine: AsyncEngine) -> None:
        self._port = port
        config = PrometheusConfig(
            app_name="windi_chat", prefix=PREFIX, group_path=True, exclude=["^/metrics$"]
        )
        self.middleware: list[Middleware] = [config.middleware]
        self.route_handlers: list[ControllerRouterHandler] = [] if port else [_MetricsController]
        _OPEN_SOCKETS.labels(kind="chat").set_function(open_sockets)
        pool = engine.sync_engine.pool
        _POOL_IN_USE.set_function(lambda: float(getattr(pool, "checkedout", lambda: 0)()))

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


class _MetricsController(PrometheusController):
    """``/metrics`` on the main port, open like ``/health``: keep it off the public internet."""

    path = "/metrics"
    include_in_schema = False
    opt = {"exclude_from_auth": True}
