"""uvicorn's WebSocket protocol, with a close that frees the connection even when the client is stuck.

uvicorn closes a WebSocket's transport gracefully, and a graceful close waits until the kernel has
taken everything buffered. A client that stopped reading never lets that happen: its connection, its
descriptor and its send buffers stay until it reads again or dies. Here, once the server has asked for a
close (or the socket's handler has ended, or the keepalive ping timed out), the client has
``WINDI_WS_CLOSE_TIMEOUT`` seconds to finish the closing handshake; then the transport is aborted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from windi_chat.config import Settings

__all__ = ("ClosingWebSocketProtocol",)

logger = logging.getLogger("windi_chat.realtime")


@functools.cache
def _close_timeout() -> float:
    # Read from the environment, as the app reads its settings: uvicorn builds protocols itself, in
    # every worker process, and passes them only its own config.
    return Settings.from_env().ws_close_timeout


class ClosingWebSocketProtocol(WebSocketsSansIOProtocol):
    """The default WebSocket protocol of uvicorn, plus a deadline on closing."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.close_timeout = _close_timeout()
        self._abort_timer: asyncio.TimerHandle | None = None

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
