"""The driver's WebSocket client for the load scenarios: websockets' own protocol, no task per socket.

The load windows run hundreds of sockets, each getting five frames per message in `pairs`. Through
``websockets.asyncio``'s connection, every frame wakes the socket's reader task and crosses a queue
first: that cost is the driver's, yet it takes a CPU the server and PostgreSQL share, and it delays
the moment a frame is stamped. Here websockets' sans-I/O protocol parses what the transport reads and
each text frame is handed to a callback at once, within the read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

__all__ = ("WireSocket", "open_wire")

CLOSE_TIMEOUT = 5.0
OnText = Callable[[bytes, float], None]
ABNORMAL_CLOSURE = 1006


class WireSocket(asyncio.Protocol):
    """One client connection. ``on_text`` gets each text message's bytes and when they were read;
    ``on_close`` is called once, when the connection has ended."""

    def __init__(self, uri: WebSocketURI, on_text: OnText, on_close: Callable[[], None]) -> None:
        self._protocol = ClientProtocol(uri, max_size=2**20)
        self._on_text, self._on_close = on_text, on_close
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._fragments: list[bytes] = []
        self.failure: Exception | None = None  # raised by ``on_text``; the connection was dropped

    @property
    def close_code(self) -> int:
        return self._protocol.close_code or ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str:
        return self._protocol.close_reason or ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self._protocol.send_request(self._protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()  # the ledger's clock (uvloop's own counts whole milliseconds)
        self._protocol.receive_data(data)
        self._handle(now)

    def eof_received(self) -> None:
        self._protocol.receive_eof()
        self._handle(time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        # A reset leaves the protocol open, or closing with the server's close frame unacknowledged:
        # the end of the stream settles its state and its close code either way.
        self._protocol.receive_eof()  # idempotent
        if not self.opened.done():
            lost = self._protocol.handshake_exc or ConnectionError(f"closed during the handshake: {exc}")
            self.opened.set_exception(lost)
        if not self.closed.done():
            self.closed.set_result(None)
            self._on_close()

    def send_text(self, text: bytes) -> None:
        if self._protocol.state is State.OPEN:
            self._protocol.send_text(text)
            self._flush()

    async def close(self) -> None:
        if self._protocol.state is State.OPEN:
            self._protocol.send_close()
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
        except TimeoutError:
            self.abort()
            await self.closed

    def _handle(self, now: float) -> None:
        for event in self._protocol.events_received():
            if isinstance(event, Response):
                if self.opened.done():  # the caller gave up waiting
                    continue
                if self._protocol.handshake_exc is not None:
                    self.opened.set_exception(self._protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                self._fragments.append(bytes(event.data))
                if event.fin:
                    text = b"".join(self._fragments)  # one fragment: the same bytes, not a copy
                    self._fragments.clear()
                    try:
                        self._on_text(text, now)
                    except Exception as exc:  # the driver's own fault: kept, not taken for a close
                        self.failure = exc
                        self.abort()
                        return
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _flush(self) -> None:
        assert self._transport is not None
        if self._transport.is_closing():  # uvloop raises on a write to a closed transport
            return
        for data in self._protocol.data_to_send():
            if data:
                self._transport.write(data)
            elif self._transport.can_write_eof():
                self._transport.write_eof()
        if self._protocol.state is State.CLOSED:  # the closing handshake is over, both ways
            self._transport.close()


async def open_wire(url: str, on_text: OnText, on_close: Callable[[], None]) -> WireSocket:
    """Connect and complete the handshake (the caller bounds how long it may take)."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    _, socket = await loop.create_connection(lambda: WireSocket(uri, on_text, on_close), uri.host, uri.port)
    try:
        await socket.opened
    except BaseException:  # refused, or the caller's deadline passed: the connection is not kept
        socket.abort()
        raise
    return socket
