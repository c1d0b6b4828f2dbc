"""What every open socket does, whether it serves one chat (``/ws/{chat_id}``) or a device (``/ws``).

:class:`SocketCore` sends frames one at a time and closes once; it reads client frames in order under
the frame size and rate limits, hands sends to the writer and acknowledges them in the order they came,
answers every other frame through the actions, and ends the socket when its access ends: its token
expires (unless an ``auth`` frame renewed it) or its session is revoked, on whichever process. The
:class:`~windi_chat.sockets.SocketRegistry` sweeps for sockets whose client stopped reading.

Subclasses forward their events and say which chat a client frame is for.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.config import Settings
from windi_chat.database import unit_of_work
from windi_chat.errors import ChatNotFoundError, DomainError, RateLimitedError, UnauthenticatedError
from windi_chat.events import EventBus
from windi_chat.frame_actions import change_message
from windi_chat.frames import (
    MAX_FRAME_BYTES,
    AckFrame,
    AuthFrame,
    AuthOkFrame,
    DeleteFrame,
    EditFrame,
    ErrorFrame,
    GatewayFrame,
    ReactFrame,
    ReadFrame,
    SendFrame,
)
from windi_chat.limits import READS_LIMITED, PersonLimits
from windi_chat.messaging import Sent, mark_read
from windi_chat.metrics import METERS, REFUSED_FRAMES, SEND_LATENCY_SOCKET
from windi_chat.protocol import close_code, decode_client_frame, encode, error_frame, warn_if_unavailable
from windi_chat.revocations import SessionGate
from windi_chat.security import TokenClaims, TokenCodec
from windi_chat.sockets import CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_UNAUTHORIZED, FrameRateLimiter
from windi_chat.turns import Turns
from windi_chat.writer import MessageWriter

__all__ = ("SocketContext", "SocketCore", "client_id_of")

logger = logging.getLogger("windi_chat.realtime")


@dataclass(frozen=True, slots=True)
class SocketContext:
    """What every socket of the process shares: the actions' dependencies and the token checks."""

    events: EventBus
    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    tokens: TokenCodec
    gate: SessionGate
    writer: MessageWriter
    limits: PersonLimits
    turns: Turns


class SocketCore:
    """One accepted socket's sending, closing, reading and answering; its events are the subclass's."""

    # Whether the socket's answers name the chat they are for (the gateway carries many chats).
    names_chats = False

    def __init__(self, socket: WebSocket[Any, Any, Any], claims: TokenClaims, shared: SocketContext) -> None:
        settings = shared.settings
        self.socket = socket
        self.user_id = claims.user_id
        self.session_id = claims.session_id
        self.expires_at = claims.expires_at  # renewed by ``auth`` frames; watched by the registry's sweep
        self.socket_id = secrets.token_hex(8)
        self._shared = shared
        self._events = shared.events
        self._sessions = shared.sessions
        self._writer = shared.writer
        self._limiter = FrameRateLimiter(settings.ws_frames_per_second)
        # Events the socket may have waiting (settings.ws_socket_backlog); a socket this far behind is
        # closed and catches up on reconnect. The queue itself is unbounded, since Litestar's bounded
        # queues drop events silently and unsubscribing from a full one blocks; it grows past the limit
        # only while a send waits, for at most the send timeout.
        self._backlog = settings.ws_socket_backlog
        self._turn = shared.turns.turn()  # its turns at sending a backlog of events
        self._sending_since: float | None = None  # watched by SocketRegistry._close_stuck_sockets
        # Held while a client frame is handled, so a shutdown lets an in-flight send commit and ack.
        self._handling = asyncio.Lock()
        # Sends queued for the writer whose acks are still to go out, in the order they came, each with
        # its chat. Several sends of one socket can then share a batch; a full queue pauses reading.
        # Each with its arrival time (``time.perf_counter()``) for the latency metric, 0 when it is off.
        self._unacked: asyncio.Queue[tuple[SendFrame, int, asyncio.Future[Sent], float]] = asyncio.Queue(
            settings.ws_sends_in_flight
        )
        self._send_lock = asyncio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._closed = False
        self._first_frame: str | bytes | None = None  # read before the loops started, handled first

    async def _run(self) -> None:
        """Forward events, acknowledge sends and read frames until the client leaves or a loop ends it."""
        try:
            async with anyio.create_task_group() as tasks:
                self._scope = tasks.cancel_scope
                tasks.start_soon(self._forward_events)
                tasks.start_soon(self._answer_sends)
                await self._read_frames()
                tasks.cancel_scope.cancel()
        finally:
            self._turn.end()  # a socket closed in its turn passes it on

    async def _forward_events(self) -> None:
        raise NotImplementedError

    # Sending ---------------------------------------------------------------------------------------

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

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
                await self.socket.send({"type": "websocket.send", "text": frame, "bytes": None})
        except (OSError, WebSocketDisconnect, RuntimeError):
            # The client went away, or the server already closed the connection (a keepalive ping
            # timed out): there is nobody left to tell.
            self._closed = True
            if self._scope is not None:
                self._scope.cancel()
        finally:
            self._sending_since = None

    def _chat_named(self, chat_id: int | None) -> int | None:
        return chat_id if self.names_chats else None

    async def _send_error(
        self, code: str, detail: str, client_id: str | None = None, chat_id: int | None = None
    ) -> None:
        frame = ErrorFrame(code=code, detail=detail, client_id=client_id, chat_id=self._chat_named(chat_id))
        await self._send(encode(frame))

    async def shutdown(self, code: int, reason: str) -> None:
        """Close once the frame in hand is handled and the sends already queued are acknowledged."""
        async with self._handling:
            await self._finish_sends()
            await self.close(code, reason)

    async def _finish_sends(self) -> None:
        """Let the sends already queued be acknowledged (a client that reads nothing gets no longer)."""
        with anyio.move_on_after(self._shared.settings.ws_send_timeout):
            await self._unacked.join()

    async def close(self, code: int, reason: str) -> None:
        """Close once and stop every loop."""
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

    # Reading client frames -------------------------------------------------------------------------

    async def _receive(self) -> str | bytes | None:
        """The next client frame, or None once the client left or the socket closed for it."""
        event = await self.socket.receive()
        if event["type"] == "websocket.disconnect":
            return None
        text, data = event.get("text"), event.get("bytes")
        raw = text if isinstance(text, str) else data if isinstance(data, bytes) else b""
        if len(raw) > MAX_FRAME_BYTES or (isinstance(raw, str) and len(raw.encode()) > MAX_FRAME_BYTES):
            await self.close(CLOSE_TOO_BIG, f"frames are limited to {MAX_FRAME_BYTES} bytes")
            return None
        return raw

    async def _read_frames(self) -> None:
        raw, self._first_frame = self._first_frame, None
        while True:
            if raw is None:
                raw = await self._receive()
                if raw is None:
                    return
            if not self._limiter.allow():
                raw = None
                if METERS.on:
                    REFUSED_FRAMES.inc()
                if self._limiter.exhausted:
                    await self.close(CLOSE_POLICY, "too many frames")
                    return
                await self._send_error("rate_limited", "Too many frames; slow down")
                continue
            async with self._handling:
                if self.expired(datetime.now(UTC)):
                    await self._finish_sends()
                    await self.close(CLOSE_UNAUTHORIZED, "token expired")
                    return
                await self._handle(decode_client_frame(raw, gateway=self.names_chats))
            raw = None

    async def _handle(self, frame: GatewayFrame | ErrorFrame) -> None:
        """Queue a send, or answer any other frame once the sends before it are answered."""
        chat = self._chat_of(frame)
        if isinstance(chat, ErrorFrame):
            frame, chat_id = chat, 0
        else:
            chat_id = chat
        if isinstance(frame, SendFrame):
            arrived = time.perf_counter() if METERS.on else 0.0
            future = self._writer.submit(chat_id, self.user_id, frame.client_id, frame.text, frame.reply_to)
            future.add_done_callback(_retrieve)
            await self._unacked.put((frame, chat_id, future, arrived))  # waits while too many are unacked
            return
        await self._unacked.join()  # what came before is answered first
        if isinstance(frame, ErrorFrame):
            # One short line, never the frame itself: it may hold a message text, and a client may
            # send many.
            logger.info("Refused a frame on socket %s: %s", self.socket_id, frame.code)
            await self._send(encode(frame))
        else:
            await self._answer(frame, self._act(frame, chat_id), chat_id)

    def _chat_of(self, frame: GatewayFrame | ErrorFrame) -> int | ErrorFrame:
        """The chat a frame is for, or the error frame that refuses it (a frame of no chat: 0)."""
        raise NotImplementedError

    async def _act(self, frame: GatewayFrame, chat_id: int) -> None:
        """Carry out one client frame other than a send through the actions, as REST would."""
        if isinstance(frame, ReadFrame):
            self._shared.limits.reads.check(self.user_id, READS_LIMITED)
            async with unit_of_work(self._sessions) as session:
                await mark_read(session, self._events, chat_id, self.user_id, frame.seq)
        elif isinstance(frame, AuthFrame):
            await self._renew(frame.token)
        elif isinstance(frame, EditFrame | DeleteFrame | ReactFrame):
            ack = await change_message(self._shared, chat_id, self.user_id, frame)
            ack.chat_id = self._chat_named(chat_id)
            await self._send(encode(ack))
        elif self._shared.limits.typing.allow(chat_id, self.user_id):
            self._events.typing(chat_id, self.user_id, self.socket_id)

    async def _answer_sends(self) -> None:
        """Acknowledge queued sends in the order they came, each once it is committed."""
        while True:
            frame, chat_id, future, arrived = await self._unacked.get()
            try:
                await self._answer(frame, self._ack(frame, chat_id, future, arrived), chat_id)
            finally:
                self._unacked.task_done()

    async def _ack(
        self, frame: SendFrame, chat_id: int, future: asyncio.Future[Sent], arrived: float
    ) -> None:
        sent = await future
        ack = AckFrame(client_id=frame.client_id, message=sent.message, chat_id=self._chat_named(chat_id))
        await self._send(encode(ack))
        if arrived:
            SEND_LATENCY_SOCKET.observe(time.perf_counter() - arrived)

    def _ends_socket(self, error: DomainError) -> bool:
        """Whether an action's error closes the socket rather than answering with an error frame."""
        return isinstance(error, ChatNotFoundError | UnauthenticatedError)

    async def _answer(self, frame: GatewayFrame, action: Awaitable[None], chat_id: int) -> None:
        """Carry out a frame's action; an error becomes an error frame, or ends the socket."""
        client_id = client_id_of(frame)
        try:
            await action
        except DomainError as error:
            if self._ends_socket(error):
                await self.close(close_code(error), error.detail)
                return
            if isinstance(error, RateLimitedError) and error.exhausted:
                await self.close(CLOSE_POLICY, "too many messages")
                return
            warn_if_unavailable(error, f"frame on socket {self.socket_id}")
            await self._send(encode(error_frame(error, client_id, self._chat_named(chat_id or None))))
        except Exception:
            logger.exception("Frame failed on socket %s", self.socket_id)
            await self._send_error("internal", "The frame could not be handled", client_id, chat_id or None)

    # Access ----------------------------------------------------------------------------------------

    async def still_live(self) -> bool:
        """Whether the socket's session is still live; if not, the socket is closed."""
        try:
            if await self._shared.gate.is_live(self.session_id, self.user_id):
                return True
            raise UnauthenticatedError("session ended; log in again")
        except DomainError as error:
            await self.close(close_code(error), error.detail)
            return False

    async def _renew(self, token: str) -> None:
        """Carry on with a newer token of the same person; any other token ends the socket."""
        claims = self._shared.tokens.read(token)
        if claims is None or claims.user_id != self.user_id:
            raise UnauthenticatedError("invalid token")
        if not await self._shared.gate.is_live(claims.session_id, claims.user_id):
            raise UnauthenticatedError("session ended; log in again")
        self.session_id, self.expires_at = claims.session_id, claims.expires_at
        if await self.still_live():  # the new session may have been revoked while it was checked
            await self._send(encode(AuthOkFrame(expires_at=claims.expires_at)))


def client_id_of(frame: GatewayFrame | ErrorFrame) -> str | None:
    """The client's id of a frame that has one, for the error that answers it."""
    return frame.client_id if isinstance(frame, SendFrame | EditFrame | DeleteFrame | ReactFrame) else None


def _retrieve(future: asyncio.Future[Sent]) -> None:
    """Mark a send's failure as seen: a socket that went away leaves its outcomes unread."""
    if not future.cancelled():
        future.exception()
