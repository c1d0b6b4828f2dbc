"""uvicorn's protocols, with the deadlines a server facing the internet needs.

:class:`GuardedHttpProtocol`: a request whose headers have not all arrived within
``WINDI_HTTP_HEADER_TIMEOUT`` seconds is dropped, and a connection past ``WINDI_MAX_CONNECTIONS`` gets
an immediate 503. uvicorn times out idle keep-alive connections but not a request that trickles in a
byte at a time, so a few hundred such connections used to hold every descriptor of the process.

:class:`ClosingWebSocketProtocol`: uvicorn closes a WebSocket's transport gracefully, and a graceful
close waits until the kernel has taken everything buffered. A client that stopped reading never lets
that happen: its connection, its descriptor and its send buffers stay until it reads again or dies.
Here, once the server has asked for a close (or the socket's handler has ended, or the keepalive ping
timed out), the client has ``WINDI_WS_CLOSE_TIMEOUT`` seconds to finish the closing handshake; then
the transport is aborted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from typing import Any, cast

from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from windi_chat.config import Settings

__all__ = ("ClosingWebSocketProtocol", "CorkedTransport", "GuardedHttpProtocol", "max_connections")

logger = logging.getLogger("windi_chat.transports")

# Dropped connections are counted and reported at most this often: an attack must not flood the log.
WARNING_INTERVAL_SECONDS = 60.0


@functools.cache
def _settings() -> Settings:
    # Read from the environment, as the app reads its settings: uvicorn builds protocols itself, in
    # every worker process, and passes them only its own config.
    return Settings.from_env()


class _RateLimitedWarning:
    """Counts events and logs them in one WARNING for the first, then at most one a minute."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._unreported = 0
        self._reported_at: float | None = None

    def count(self, now: float, *details: object) -> None:
        self._unreported += 1
        if self._reported_at is not None and now - self._reported_at < WARNING_INTERVAL_SECONDS:
            return
        logger.warning(self._message, self._unreported, *details)
        self._unreported, self._reported_at = 0, now


_slow_headers = _RateLimitedWarning(
    "Dropped %d connection(s) whose request headers did not arrive within %gs "
    "(slow or stalled clients; reported at most once a minute)"
)
_over_cap = _RateLimitedWarning(
    "Refused %d connection(s) with 503: %d connections open, the most allowed "
    "(WINDI_MAX_CONNECTIONS; reported at most once a minute)"
)
# Descriptors kept back from the automatic connection cap, for the database pool, Redis and logs.
RESERVED_DESCRIPTORS = 100
_SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 33\r\n"
    b"retry-after: 3\r\n"
    b"connection: close\r\n\r\n"
    b"Too many connections; try again\r\n"
)


@functools.cache
def max_connections() -> int:
    """``WINDI_MAX_CONNECTIONS``, or by default what the open-files limit leaves after a reserve."""
    configured = _settings().max_connections
    if configured:
        return configured
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(soft - RESERVED_DESCRIPTORS, 1) if soft != resource.RLIM_INFINITY else 1_000_000


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's default HTTP protocol, plus a cap on connections and a deadline for request headers.

    A connection past the cap is answered 503 at once and closed, before anything is read, so it
    holds its descriptor for no time. The header deadline runs from the connection's start for its
    first request and from the first byte of each later one; the keep-alive timeout still covers the
    wait between requests.
    """

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(cast("asyncio.Transport", transport))
        # WebSockets count too: they stay in the server's set of connections after the upgrade.
        if len(self.connections) > max_connections():
            _over_cap.count(self.loop.time(), len(self.connections) - 1)
            self.transport.write(_SERVICE_UNAVAILABLE)
            self.transport.close()
            return
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(_settings().http_header_timeout, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            _slow_headers.count(self.loop.time(), _settings().http_header_timeout)
            self.transport.abort()


class CorkedTransport:
    """A transport whose writes within one turn of the event loop go to the kernel as one.

    A socket that sends many frames in a row (its share of a burst into a big group) would otherwise
    make one system call, and one TCP segment, per frame: most of what a delivery costs. Writes are
    kept in order and flushed once the tasks that are ready have run; a close flushes first.
    """

    __slots__ = ("_flush_pending", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._flush_pending = False

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ClosingWebSocketProtocol(WebSocketsSansIOProtocol):
    """The default WebSocket protocol of uvicorn, plus a deadline on closing, on a corked transport."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.close_timeout = _settings().ws_close_timeout
        self._abort_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(
            cast("asyncio.Transport", CorkedTransport(cast("asyncio.Transport", transport), self.loop))
        )

    def _abort_later(self) -> None:
        """Start the close deadline once; a connection that ends first cancels it."""
        if self._abort_timer is None and not self.disconnected:
            self._abort_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self.disconnected:
            logger.info(
                "Aborting a WebSocket connection whose client did not complete the close within %gs",
                self.close_timeout,
            )
            self.transport.abort()

    async def send(self, message: ASGISendEvent) -> None:
        # Before sending: when the client reads nothing, the send itself may wait for buffer room forever.
        if message["type"] == "websocket.close" and self.handshake_complete:
            self._abort_later()
        await super().send(message)

    async def run_asgi(self) -> None:
        await super().run_asgi()
        self._abort_later()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._abort_later()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)
