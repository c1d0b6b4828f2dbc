"""The WebSocket ``/ws/{chat_id}``: live delivery through channels, client frames through the actions.

A socket subscribes to its chat's channel before it accepts, so it misses nothing published after the
handshake. Each socket runs two loops: one reads client frames in order and calls the messaging
actions; the other forwards the chat's events. Nothing here writes SQL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import anyio
import msgspec
from litestar import WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.config import Settings
from windi_chat.database import is_unavailable
from windi_chat.delivery import GuardedBackend
from windi_chat.events import KIND_MESSAGE, KIND_REMOVED, KIND_TYPING, EventBus, chat_channel, split_event
from windi_chat.messaging import (
    InvalidMessageError,
    NotMemberError,
    can_read,
    mark_read,
    messages_after,
    send_message,
)
from windi_chat.schemas import (
    AckFrame,
    ClientFrame,
    ErrorFrame,
    MessageFrame,
    ReadFrame,
    ResyncFrame,
    SendFrame,
)
from windi_chat.security import TokenCodec

__all__ = ("SocketRegistry", "chat_socket")

logger = logging.getLogger("windi_chat.realtime")

# Close codes a client acts on (see docs/protocol.md).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # flooding
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012  # live events were lost: reconnect with after_seq
CLOSE_TRY_AGAIN = 1013  # fell too far behind, or the database is unavailable: reconnect with after_seq
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403

MAX_FRAME_BYTES = 65_536
CATCH_UP_LIMIT = 1000
BURST_FRAMES = 50

_decode_frame = msgspec.json.Decoder(ClientFrame).decode
_encoder = msgspec.json.Encoder()


def _encode(frame: msgspec.Struct) -> str:
    return _encoder.encode(frame).decode()


class FrameRateLimiter:
    """A token bucket: bursts of ``burst`` frames pass, a sustained rate above ``rate`` does not.

    Refused frames draw on a second bucket of patience; a socket that exhausts it keeps flooding and is
    closed.
    """

    def __init__(self, rate: float, burst: int = BURST_FRAMES) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._patience = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._patience = min(self._burst, self._patience + elapsed)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._patience -= 1
        return False

    @property
    def exhausted(self) -> bool:
        return self._patience < 0


class SocketRegistry:
    """The open sockets of this process: subscribing them, and closing them when they must catch up.

    Subscribing and unsubscribing go through one lock: interleaved, Litestar's channels plugin can
    unsubscribe the backend from a channel that a new socket has just joined.
    """

    def __init__(self, channels: ChannelsPlugin, backend: GuardedBackend, send_timeout: float) -> None:
        self._channels = channels
        self._backend = backend
        self._send_timeout = send_timeout
        self._connections: set[ChatConnection] = set()
        self._subscription_lock = anyio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self.closing = False

    def __len__(self) -> int:
        return len(self._connections)

    async def subscribe(self, chat_id: int) -> Subscriber | None:
        """A subscriber to the chat's events, or None when the backend could not subscribe."""
        channel = chat_channel(chat_id)
        async with self._subscription_lock:
            subscriber = await self._channels.subscribe(channel)
            if self._backend.is_subscribed(channel):
                return subscriber
            await self._channels.unsubscribe(subscriber)
        return None

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        with anyio.CancelScope(shield=True):
            async with self._subscription_lock:
                await self._channels.unsubscribe(subscriber)

    def add(self, connection: ChatConnection) -> None:
        self._connections.add(connection)
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._close_stuck_sockets())

    async def _close_stuck_sockets(self) -> None:
        """Close the sockets whose client has not taken a frame within the send timeout.

        One sweep for the whole process is much cheaper than a timer around every frame sent; it stops
        when the last socket is gone and starts again with the next one.
        """
        while self._connections:
            await asyncio.sleep(min(1.0, self._send_timeout / 2))
            sent_before = time.monotonic() - self._send_timeout
            for connection in list(self._connections):
                if connection.sending_since(sent_before):
                    self._spawn(connection.close(CLOSE_TRY_AGAIN, "too slow to receive"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def discard(self, connection: ChatConnection) -> None:
        self._connections.discard(connection)

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Refuse new sockets, let each open one finish its current frame, then close it."""
        self.closing = True
        if self._connections:
            logger.info("Closing %d sockets (code %d)", len(self._connections), code)
        async with anyio.create_task_group() as tasks:
            for connection in list(self._connections):
                tasks.start_soon(connection.shutdown, code, reason)

    def events_lost(self, channels: Iterable[str] | None) -> None:
        """Live events may have been lost: close the affected sockets so their clients catch up."""
        wanted = None if channels is None else set(channels)
        for connection in list(self._connections):
            if wanted is None or chat_channel(connection.chat_id) in wanted:
                reason = "events lost; reconnect with after_seq"
                self._spawn(connection.shutdown(CLOSE_SERVICE_RESTART, reason))


def _token_of(socket: WebSocket[Any, Any, Any]) -> str | None:
    token = socket.query_params.get("token")
    if token:
        return token
    scheme, _, credentials = socket.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


async def _refuse(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    """Accept, then close at once: browsers can read a close code, not an HTTP status."""
    await socket.accept()
    await socket.close(code=code, reason=reason)


@websocket("/ws/{chat_id:int}", name="chat_socket")
async def chat_socket(
    socket: WebSocket[Any, Any, Any],
    chat_id: FromPath[int],
    tokens: NamedDependency[TokenCodec],
    events: NamedDependency[EventBus],
    sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    settings: NamedDependency[Settings],
    registry: NamedDependency[SocketRegistry],
) -> None:
    """The live connection of one device to one chat. The token comes as ``?token=`` or a bearer header."""
    if registry.closing:
        await _refuse(socket, CLOSE_GOING_AWAY, "server shutting down")
        return
    token = _token_of(socket)
    user_id = tokens.user_id(token) if token else None
    if user_id is None:
        await _refuse(socket, CLOSE_UNAUTHORIZED, "missing, invalid or expired token")
        return
    raw_after = socket.query_params.get("after_seq")
    after_seq = (
        int(raw_after) if raw_after is not None and raw_after.isascii() and raw_after.isdigit() else None
    )
    if raw_after is not None and after_seq is None:
        await _refuse(socket, CLOSE_BAD_REQUEST, "after_seq must be a non-negative integer")
        return
    try:
        async with sessions() as session:
            allowed = await can_read(session, chat_id, user_id)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        await _refuse(socket, CLOSE_TRY_AGAIN, "database unavailable")
        return
    if not allowed:
        await _refuse(socket, CLOSE_FORBIDDEN, "not a member of this chat")
        return
    subscriber = await registry.subscribe(chat_id)
    if subscriber is None:
        await _refuse(socket, CLOSE_TRY_AGAIN, "live delivery unavailable")
        return
    try:
        await socket.accept()
        connection = ChatConnection(socket, chat_id, user_id, subscriber, events, sessions, settings)
        registry.add(connection)
        logger.info("Socket opened: chat_id=%s user_id=%s socket=%s", chat_id, user_id, connection.socket_id)
        try:
            await connection.serve(after_seq)
        finally:
            registry.discard(connection)
        logger.info("Socket closed: chat_id=%s user_id=%s socket=%s", chat_id, user_id, connection.socket_id)
    finally:
        await registry.unsubscribe(subscriber)


class ChatConnection:
    """One accepted socket: its reader loop, its forwarder loop and what they share."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        chat_id: int,
        user_id: int,
        subscriber: Subscriber,
        events: EventBus,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self.socket = socket
        self.chat_id = chat_id
        self.user_id = user_id
        self.socket_id = secrets.token_hex(8)
        self._socket_id_bytes = self.socket_id.encode()
        self._subscriber = subscriber
        self._events = events
        self._sessions = sessions
        self._limiter = FrameRateLimiter(settings.ws_frames_per_second)
        # Events the socket may have waiting (settings.ws_socket_backlog); a socket this far behind is
        # closed and catches up on reconnect. The queue itself is unbounded, since Litestar's bounded
        # queues drop events silently and unsubscribing from a full one blocks; it grows past the limit
        # only while a send waits, for at most the send timeout.
        self._backlog = settings.ws_socket_backlog
        self._sending_since: float | None = None  # watched by SocketRegistry._close_stuck_sockets
        # Held while a client frame is handled, so a shutdown lets an in-flight send commit and ack.
        self._handling = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._closed = False

    async def serve(self, after_seq: int | None) -> None:
        async with anyio.create_task_group() as tasks:
            self._scope = tasks.cancel_scope
            tasks.start_soon(self._forward_events, after_seq)
            await self._read_frames()
            tasks.cancel_scope.cancel()

    # Sending ---------------------------------------------------------------------------------------

    def sending_since(self, moment: float) -> bool:
        """Whether a send started before ``moment`` is still waiting for the client to take it."""
        return self._sending_since is not None and self._sending_since < moment

    async def _send(self, frame: str) -> None:
        """Send one text frame (a client that does not take it in time is closed by the registry)."""
        if self._closed:
            return
        self._sending_since = time.monotonic()
        try:
            # One send at a time: some WebSocket implementations break on concurrent drains.
            async with self._send_lock:
                await self.socket.send({"type": "websocket.send", "text": frame})
        except (OSError, WebSocketDisconnect, RuntimeError):
            # The client went away, or the server already closed the connection (a keepalive ping
            # timed out): there is nobody left to tell.
            self._closed = True
            if self._scope is not None:
                self._scope.cancel()
        finally:
            self._sending_since = None

    async def _send_error(self, code: str, detail: str, client_id: str | None = None) -> None:
        await self._send(_encode(ErrorFrame(code=code, detail=detail, client_id=client_id)))

    async def shutdown(self, code: int, reason: str) -> None:
        async with self._handling:
            await self.close(code, reason)

    async def close(self, code: int, reason: str) -> None:
        """Close once and stop both loops."""
        if not self._closed:
            self._closed = True
            logger.info("Closing socket %s: code=%s (%s)", self.socket_id, code, reason)
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                try:
                    await self.socket.close(code=code, reason=reason)
                except Exception:
                    logger.debug("Close of socket %s failed", self.socket_id)
        if self._scope is not None:
            self._scope.cancel()

    # Forwarding events ------------------------------------------------------------------------------

    async def _forward_events(self, after_seq: int | None) -> None:
        sent_up_to = 0 if after_seq is None else await self._catch_up(after_seq)
        if sent_up_to is None:
            return
        async for payload in self._subscriber.iter_events():
            if self._subscriber.qsize > self._backlog:
                await self.close(CLOSE_TRY_AGAIN, "fell too far behind")
                return
            kind, argument, frame = split_event(payload)
            if kind == KIND_MESSAGE and sent_up_to and int(argument) <= sent_up_to:
                continue  # already sent during catch-up
            if kind == KIND_TYPING and argument == self._socket_id_bytes:
                continue
            await self._send(frame)
            if kind == KIND_REMOVED and int(argument) == self.user_id:
                await self.close(CLOSE_FORBIDDEN, "removed from this chat")
                return

    async def _catch_up(self, after_seq: int) -> int | None:
        """Send what was stored after ``after_seq``; return the seq up to which live copies are dropped."""
        try:
            async with self._sessions() as session:
                backlog, last_seq = await messages_after(session, self.chat_id, after_seq, CATCH_UP_LIMIT + 1)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await self.close(CLOSE_TRY_AGAIN, "database unavailable")
            return None
        if len(backlog) > CATCH_UP_LIMIT or after_seq > last_seq:
            # Too much to replay, or the client knows of seqs this chat never had: it pages /history.
            await self._send(_encode(ResyncFrame(after_seq=after_seq, last_seq=last_seq)))
            return last_seq
        for message in backlog:
            await self._send(_encode(MessageFrame(message=message)))
        return backlog[-1].seq if backlog else after_seq

    # Reading client frames -------------------------------------------------------------------------

    async def _read_frames(self) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            raw: str | bytes | None = event.get("text")
            if raw is None:
                raw = event.get("bytes") or b""
            if len(raw) > MAX_FRAME_BYTES or (isinstance(raw, str) and len(raw.encode()) > MAX_FRAME_BYTES):
                await self.close(CLOSE_TOO_BIG, f"frames are limited to {MAX_FRAME_BYTES} bytes")
                return
            if not self._limiter.allow():
                if self._limiter.exhausted:
                    await self.close(CLOSE_POLICY, "too many frames")
                    return
                await self._send_error("rate_limited", "Too many frames; slow down")
                continue
            async with self._handling:
                await self._handle(raw)

    async def _handle(self, raw: str | bytes) -> None:
        try:
            frame = _decode_frame(raw)
        except msgspec.ValidationError as exc:
            value = msgspec.json.decode(raw)
            kind = value.get("type") if isinstance(value, dict) else None
            client_id = value.get("client_id") if isinstance(value, dict) else None
            client_id = client_id if isinstance(client_id, str) else None
            if not isinstance(value, dict) or kind is None:
                await self._send_error("invalid_frame", "A frame is a JSON object with a type")
            elif kind not in ("send", "read", "typing"):
                await self._send_error("unknown_type", f"Unknown frame type: {kind!r}", client_id)
            else:
                await self._send_error("invalid_frame", str(exc), client_id)
            return
        except msgspec.DecodeError:
            await self._send_error("invalid_json", "Frames must be JSON objects")
            return
        client_id = frame.client_id if isinstance(frame, SendFrame) else None
        try:
            async with self._sessions() as session:
                if isinstance(frame, SendFrame):
                    sent = await send_message(
                        session, self._events, self.chat_id, self.user_id, frame.client_id, frame.text
                    )
                    await self._send(_encode(AckFrame(client_id=frame.client_id, message=sent.message)))
                elif isinstance(frame, ReadFrame):
                    await mark_read(session, self._events, self.chat_id, self.user_id, frame.seq)
                else:
                    self._events.typing(self.chat_id, self.user_id, self.socket_id)
        except InvalidMessageError as exc:
            await self._send_error("invalid_frame", exc.detail, client_id)
        except NotMemberError:
            await self.close(CLOSE_FORBIDDEN, "not a member of this chat")
        except Exception as exc:
            if is_unavailable(exc):
                logger.warning("Database unavailable for socket %s: %s", self.socket_id, type(exc).__name__)
                await self._send_error("unavailable", "The database is unavailable; retry", client_id)
            else:
                logger.exception("Frame failed on socket %s", self.socket_id)
                await self._send_error("internal", "The frame could not be handled", client_id)
