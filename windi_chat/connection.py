"""One open chat socket (``/ws/{chat_id}``): the chat's events forwarded, its client frames answered.

The sending, reading, acknowledging and access checks every socket shares are in ``connection_core``;
here is what one chat adds: catching up after ``after_seq`` or ``after_rev``, the seam with the
database poller, and the close with 4403 when its person is removed.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import WebSocket
from litestar.channels.subscriber import Subscriber

from windi_chat.catch_up import FellBehind, replay, replay_changes
from windi_chat.connection_core import SocketContext, SocketCore, client_id_of
from windi_chat.errors import DomainError
from windi_chat.events import (
    KIND_MESSAGE,
    KIND_PRESENCE,
    KIND_REMOVED,
    KIND_TYPING,
    KIND_UPDATED,
    split_event,
)
from windi_chat.frames import AuthFrame, ErrorFrame, GatewayFrame, SyncFrame
from windi_chat.metrics import METERS, count_delivery
from windi_chat.protocol import close_code, warn_if_unavailable
from windi_chat.seam import POLLED, Mode, SocketFeed
from windi_chat.security import TokenClaims
from windi_chat.sockets import CLOSE_FORBIDDEN, CLOSE_TRY_AGAIN

__all__ = ("ChatConnection", "SocketContext")

_CHANGES = frozenset((KIND_MESSAGE, KIND_UPDATED))  # the events told apart from their copies by seq or rev

logger = logging.getLogger("windi_chat.realtime")


class ChatConnection(SocketCore):
    """One accepted chat socket: its forwarder loop over the chat's events, on top of the shared core."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        chat_id: int,
        claims: TokenClaims,
        subscriber: Subscriber,
        shared: SocketContext,
        feed: SocketFeed,
    ) -> None:
        super().__init__(socket, claims, shared)
        self.chat_id = chat_id
        self._socket_id_bytes = self.socket_id.encode()
        self._subscriber = subscriber
        # What the socket has sent, and whether its events come live or from the database poller.
        self.feed = feed
        self._after_seq: int | None = None
        self._after_rev: int | None = None

    async def serve(self, after_seq: int | None, after_rev: int | None = None) -> None:
        self._after_seq, self._after_rev = after_seq, after_rev
        await self._run()

    def _chat_of(self, frame: GatewayFrame | ErrorFrame) -> int | ErrorFrame:
        """This socket's chat; a frame that names another one is refused."""
        named = None if isinstance(frame, ErrorFrame | AuthFrame | SyncFrame) else frame.chat_id
        if named is not None and named != self.chat_id:
            client_id = client_id_of(frame)
            detail = "chat_id names another chat than this socket's"
            return ErrorFrame(code="invalid_frame", detail=detail, client_id=client_id)
        return self.chat_id

    # Forwarding events ------------------------------------------------------------------------------

    async def _forward_events(self) -> None:
        after_seq, after_rev = self._after_seq, self._after_rev
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
            else:
                for event in feed.admit(payload):  # delivery from the database (see ``seam``)
                    if not await self._forward(event):
                        return
            await self._turn.sent(self._subscriber.qsize)

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
