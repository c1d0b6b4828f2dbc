"""One open chat socket: its reader loop (client frames through the actions), its forwarder loop (the
chat's events), and the checks that end it when its access ends.

A socket lives as long as its access token: it is closed with 4401 when the token's ``exp`` passes
(unless an ``auth`` frame renewed it) or when its session is revoked, on whichever process.
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
from litestar.channels.subscriber import Subscriber
from litestar.exceptions import WebSocketDisconnect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.catch_up import FellBehind, replay, replay_changes
from windi_chat.config import Settings
from windi_chat.database import unit_of_work
from windi_chat.errors import ChatNotFoundError, DomainError, RateLimitedError, UnauthenticatedError
from windi_chat.events import (
    KIND_MESSAGE,
    KIND_PRESENCE,
    KIND_REMOVED,
    KIND_TYPING,
    KIND_UPDATED,
    EventBus,
    split_event,
)
from windi_chat.frame_actions import change_message
from windi_chat.frames import (
    MAX_FRAME_BYTES,
    AckFrame,
    AuthFrame,
    AuthOkFrame,
    ClientFrame,
    DeleteFrame,
    EditFrame,
    ErrorFrame,
    ReactFrame,
    ReadFrame,
    SendFrame,
)
from windi_chat.limits import READS_LIMITED, PersonLimits
from windi_chat.messaging import Sent, mark_read
from windi_chat.metrics import METERS, REFUSED_FRAMES, SEND_LATENCY_SOCKET, count_delivery
from windi_chat.protocol import close_code, decode_client_frame, encode, error_frame, warn_if_unavailable
from windi_chat.revocations import SessionGate
from windi_chat.seam import POLLED, Mode, SocketFeed
from windi_chat.security import TokenClaims, TokenCodec
from windi_chat.sockets import (
    CLOSE_FORBIDDEN,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    FrameRateLimiter,
)
from windi_chat.writer import MessageWriter

__all__ = ("ChatConnection", "SocketContext")

_CHANGES = frozenset((KIND_MESSAGE, KIND_UPDATED))  # the events told apart from their copies by seq or rev

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


class ChatConnection:
    """One accepted socket: its reader loop, its forwarder loop and what they share."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        chat_id: int,
        claims: TokenClaims,
        subscriber: Subscriber,
        shared: SocketContext,
        feed: SocketFeed,
    ) -> None:
        settings = shared.settings
        self.socket = socket
        self.chat_id = chat_id
        self.user_id = claims.user_id
        self.session_id = claims.session_id
        self.expires_at = claims.expires_at  # renewed by ``auth`` frames; watched by the registry's sweep
        self.socket_id = secrets.token_hex(8)
        self._socket_id_bytes = self.socket_id.encode()
        self._subscriber = subscriber
        # What the socket has sent, and whether its events come live or from the database poller.
        self.feed = feed
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
        self._sending_since: float | None = None  # watched by SocketRegistry._close_stuck_sockets
        # Held while a client frame is handled, so a shutdown lets an in-flight send commit and ack.
        self._handling = asyncio.Lock()
        # Sends queued for the writer whose acks are still to go out, in the order they came. Several
        # sends of one socket can then share a batch; a full queue pauses reading the socket.
        # Each with its arrival time (``time.perf_counter()``) for the latency metric, 0 when it is off.
        self._unacked: asyncio.Queue[tuple[SendFrame, asyncio.Future[Sent], float]] = asyncio.Queue(
            settings.ws_sends_in_flight
        )
        self._send_lock = asyncio.Lock()
        self._scope: anyio.CancelScope | None = None
        self._closed = False

    async def serve(self, after_seq: int | None, after_rev: int | None = None) -> None:
        async with anyio.create_task_group() as tasks:
            self._scope = tasks.cancel_scope
            tasks.start_soon(self._forward_events, after_seq, after_rev)
            tasks.start_soon(self._answer_sends)
            await self._read_frames()
            tasks.cancel_scope.cancel()

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

    async def _send_error(self, code: str, detail: str, client_id: str | None = None) -> None:
        await self._send(encode(ErrorFrame(code=code, detail=detail, client_id=client_id)))

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

    async def _forward_events(self, after_seq: int | None, after_rev: int | None) -> None:
        if (after_seq is not None or after_rev is not None) and not await self._catch_up(
            after_seq, after_rev
        ):
            return
        feed = self.feed
        async for payload in self._subscriber.iter_events():
            if self._subscriber.qsize > self._backlog:
                await self.close(CLOSE_TRY_AGAIN, "fell too far behind")
                return
            if feed.mode is Mode.LIVE and payload[0] != POLLED:
                if not await self._forward(payload):
                    return
                continue
            for event in feed.admit(payload):  # delivery from the database (see ``seam``)
                if not await self._forward(event):
                    return

    async def _forward(self, payload: bytes) -> bool:
        """Send one event unless the client has it; False once the socket closed for a removal."""
        kind, argument, frame = split_event(payload)
        if kind in _CHANGES and not self.feed.fresh(kind, argument):
            return True  # already sent, during catch-up or by the poller
        if kind == KIND_TYPING and argument == self._socket_id_bytes:
            return True
        if kind == KIND_PRESENCE:  # presence reaches gateways only
            return True
        await self._send(frame)
        if METERS.on:
            count_delivery(kind)
        if kind == KIND_REMOVED and int(argument) == self.user_id:
            await self.close(CLOSE_FORBIDDEN, "removed from this chat")
            return False
        return True

    def enqueue(self, payload: bytes) -> None:
        """Queue an event read from the database, behind the live events already waiting."""
        self._subscriber.put_nowait(payload)

    async def _catch_up(self, after_seq: int | None, after_rev: int | None) -> bool:
        """Replay what the client missed, by seq or by rev, and drop live copies of it; False if closed."""
        limit = self._shared.settings.ws_catch_up_limit
        try:
            if after_rev is not None:
                rev, seq = await replay_changes(
                    self._send, self._sessions, self.chat_id, after_rev, self._replay_stops, limit
                )
                self.feed.caught_up_by_rev(rev, seq)
            elif after_seq is not None:
                seq = await replay(
                    self._send, self._sessions, self.chat_id, after_seq, self._replay_stops, limit
                )
                self.feed.seqs.caught_up(seq)
            return True
        except FellBehind:
            await self.close(CLOSE_TRY_AGAIN, "fell too far behind")
        except DomainError as error:
            warn_if_unavailable(error, f"catch-up of socket {self.socket_id}")
            await self.close(close_code(error), error.detail)
        return False

    def _replay_stops(self) -> bool:
        """Whether a replay must stop: the socket closed, or live events pile up behind a slow replay."""
        if self._subscriber.qsize > self._backlog:
            raise FellBehind
        return self._closed

    # Reading client frames -------------------------------------------------------------------------

    async def _read_frames(self) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            text, data = event.get("text"), event.get("bytes")
            raw = text if isinstance(text, str) else data if isinstance(data, bytes) else b""
            if len(raw) > MAX_FRAME_BYTES or (isinstance(raw, str) and len(raw.encode()) > MAX_FRAME_BYTES):
                await self.close(CLOSE_TOO_BIG, f"frames are limited to {MAX_FRAME_BYTES} bytes")
                return
            if not self._limiter.allow():
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
                frame = decode_client_frame(raw)
                if isinstance(frame, SendFrame):
                    arrived = time.perf_counter() if METERS.on else 0.0
                    future = self._writer.submit(
                        self.chat_id, self.user_id, frame.client_id, frame.text, frame.reply_to
                    )
                    future.add_done_callback(_retrieve)
                    await self._unacked.put((frame, future, arrived))  # waits while too many are unacked
                    continue
                await self._unacked.join()  # what came before is answered first
                if isinstance(frame, ErrorFrame):
                    # One short line, never the frame itself: it may hold a message text, and a client
                    # may send many.
                    logger.info("Refused a frame on socket %s: %s", self.socket_id, frame.code)
                    await self._send(encode(frame))
                else:
                    await self._answer(frame, self._act(frame))

    async def _answer_sends(self) -> None:
        """Acknowledge queued sends in the order they came, each once it is committed."""
        while True:
            frame, future, arrived = await self._unacked.get()
            try:
                await self._answer(frame, self._ack(frame, future, arrived))
            finally:
                self._unacked.task_done()

    async def _ack(self, frame: SendFrame, future: asyncio.Future[Sent], arrived: float) -> None:
        sent = await future
        await self._send(encode(AckFrame(client_id=frame.client_id, message=sent.message)))
        if arrived:
            SEND_LATENCY_SOCKET.observe(time.perf_counter() - arrived)

    async def _answer(self, frame: ClientFrame, action: Awaitable[None]) -> None:
        """Carry out a frame's action; an error becomes an error frame, or ends the socket."""
        try:
            await action
        except DomainError as error:
            if isinstance(error, ChatNotFoundError | UnauthenticatedError):
                await self.close(close_code(error), error.detail)
                return
            if isinstance(error, RateLimitedError) and error.exhausted:
                await self.close(CLOSE_POLICY, "too many messages")
                return
            warn_if_unavailable(error, f"frame on socket {self.socket_id}")
            await self._send(encode(error_frame(error, _client_id(frame))))
        except Exception:
            logger.exception("Frame failed on socket %s", self.socket_id)
            await self._send_error("internal", "The frame could not be handled", _client_id(frame))

    async def _act(self, frame: ClientFrame) -> None:
        """Carry out one client frame other than a send through the actions, as REST would."""
        if isinstance(frame, ReadFrame):
            self._shared.limits.reads.check(self.user_id, READS_LIMITED)
            async with unit_of_work(self._sessions) as session:
                await mark_read(session, self._events, self.chat_id, self.user_id, frame.seq)
        elif isinstance(frame, AuthFrame):
            await self._renew(frame.token)
        elif isinstance(frame, EditFrame | DeleteFrame | ReactFrame):
            await self._send(encode(await change_message(self._shared, self.chat_id, self.user_id, frame)))
        elif not isinstance(frame, SendFrame) and self._shared.limits.typing.allow(
            self.chat_id, self.user_id
        ):
            self._events.typing(self.chat_id, self.user_id, self.socket_id)

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


def _client_id(frame: ClientFrame) -> str | None:
    return frame.client_id if isinstance(frame, SendFrame | EditFrame | DeleteFrame | ReactFrame) else None


def _retrieve(future: asyncio.Future[Sent]) -> None:
    """Mark a send's failure as seen: a socket that went away leaves its outcomes unread."""
    if not future.cancelled():
        future.exception()
