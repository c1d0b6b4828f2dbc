"""One open gateway (``/ws``): every chat of one person's device on one socket, and their inbox live.

A gateway has one subscriber over its person's own channel and the channels of all their chats, and no
task per chat: its cost grows with the events it forwards, not with the chats that stay silent. Per chat
it keeps two numbers: the seq up to which messages were sent (live copies at or below it are dropped,
as after a catch-up) and the person's read marker, from which each message frame's ``unread_count`` is
spliced into the frame's text, so the event is still encoded once for every socket.

It opens with what the handshake read (the chats it subscribed to), then, in its forwarder loop, reads
the memberships again now that it hears their events, and serves ``sync``: replays for the chats named,
``chat_added`` for the rest, ``chat_removed`` for named chats the person is no longer in. Afterwards
``chat_added`` (on the person's channel) subscribes it to a chat and replays what the chat said before
the subscription took; the person's removal (``R<user id>`` on the chat's channel, in order with the
chat's messages) sends ``chat_removed`` and drops the chat before anything after it is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import msgspec
from litestar import WebSocket
from litestar.channels.subscriber import Subscriber

from windi_chat.catch_up import FellBehind, replay, replay_changes
from windi_chat.chat_views import INBOX_MEMBERS, OnlineCheck, chat_views, memberships
from windi_chat.connection_core import SocketContext, SocketCore, client_id_of
from windi_chat.database import unit_of_work
from windi_chat.errors import ChatNotFoundError, DomainError, UnauthenticatedError
from windi_chat.events import (
    KIND_ADDED,
    KIND_MESSAGE,
    KIND_PRESENCE,
    KIND_REMOVED,
    KIND_TYPING,
    KIND_UPDATED,
    chat_channel,
)
from windi_chat.frames import (
    AuthFrame,
    ChatAddedFrame,
    ChatRemovedFrame,
    ErrorFrame,
    GatewayFrame,
    SyncedFrame,
    SyncFrame,
    TypingFrame,
)
from windi_chat.gateway_state import NO_CHAT, ChatState, route
from windi_chat.messaging import member_last_seq
from windi_chat.metrics import METERS, count_delivery
from windi_chat.presence import RecentPresence
from windi_chat.protocol import close_code, decode_client_frame, encode, warn_if_unavailable
from windi_chat.security import TokenClaims
from windi_chat.sockets import CLOSE_BAD_REQUEST, CLOSE_TRY_AGAIN, SocketRegistry

__all__ = ("Gateway",)

logger = logging.getLogger("windi_chat.realtime")

# On a chat synced by rev, these are told apart from their replayed copies by rev.
_CHANGES = (KIND_MESSAGE, KIND_UPDATED)


class Gateway(SocketCore):
    """One accepted gateway: its subscriber, its chats' state, and its forwarder loop."""

    names_chats = True

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        claims: TokenClaims,
        shared: SocketContext,
        registry: SocketRegistry,
        subscriber: Subscriber,
        known: dict[int, tuple[int, int]],
        online: OnlineCheck,
    ) -> None:
        super().__init__(socket, claims, shared)
        self._online = online  # who is online, for the inbox entries it announces
        self._socket_id_bytes = self.socket_id.encode()
        self._registry = registry
        self._subscriber = subscriber
        self._known: dict[int, tuple[int, int]] | None = known  # chats subscribed at the handshake
        self._sync: SyncFrame | None = None
        # The chats whose channels the subscriber is on: exactly those whose events are forwarded.
        self.chats: dict[int, ChatState] = {}
        self._limit = shared.settings.sync_limit
        self._opened = asyncio.Event()  # client frames wait for the opening: they may name its chats
        self._presence = RecentPresence()

    async def serve(self) -> None:
        """Serve the opening (the ``sync``, if one came), then live events, until the gateway ends."""
        await self._run()

    def channels(self) -> set[str]:
        """The chat channels its subscriber is on (the opening may still be settling which)."""
        return {chat_channel(chat_id) for chat_id in [*self.chats, *(self._known or ())]}

    async def opening(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the first frame: a ``sync`` is kept for the opening, any other
        frame is handled first once the gateway runs. False when the client left (or sent too big a
        frame) first.
        """
        with anyio.move_on_after(wait):
            raw = await self._receive()
            if raw is None:
                return False
            frame = decode_client_frame(raw, gateway=True)
            if isinstance(frame, SyncFrame):
                self._sync = frame
            elif isinstance(frame, ErrorFrame) and _is_sync(raw):
                # A client waiting for ``synced`` would wait forever: it learns why, and reconnects.
                await self.close(CLOSE_BAD_REQUEST, f"invalid sync: {frame.detail}"[:MAX_REASON])
                return False
            else:
                self._first_frame = raw
        return True

    def _chat_of(self, frame: GatewayFrame | ErrorFrame) -> int | ErrorFrame:
        """The chat a frame names; a frame without one, or typing for a chat not here, is refused."""
        if isinstance(frame, ErrorFrame | AuthFrame):
            return NO_CHAT
        if isinstance(frame, SyncFrame):
            return ErrorFrame(code="invalid_frame", detail="sync can only be the first frame")
        if frame.chat_id is None:
            client_id = client_id_of(frame)
            detail = "On /ws every frame names its chat_id"
            return ErrorFrame(code="invalid_frame", detail=detail, client_id=client_id)
        if isinstance(frame, TypingFrame) and frame.chat_id not in self.chats:
            missing = ChatNotFoundError()
            return ErrorFrame(code="not_found", detail=missing.detail, chat_id=frame.chat_id)
        return frame.chat_id

    async def _handle(self, frame: GatewayFrame | ErrorFrame) -> None:
        await self._opened.wait()
        await super()._handle(frame)

    def _ends_socket(self, error: DomainError) -> bool:
        """A chat the person is not in answers that frame with an error; the gateway stays open."""
        return isinstance(error, UnauthenticatedError)

    # Forwarding events ------------------------------------------------------------------------------

    async def _forward_events(self) -> None:
        try:
            await self._open()
            self._opened.set()
            async for payload in self._subscriber.iter_events():
                if self._subscriber.qsize > self._backlog:
                    raise FellBehind
                await self._forward(payload)
                if self._closed:
                    return
                await self._turn.sent(self._subscriber.qsize)
        except FellBehind:
            await self.close(CLOSE_TRY_AGAIN, "fell too far behind")
        except DomainError as error:
            warn_if_unavailable(error, f"gateway {self.socket_id}")
            await self.close(close_code(error), error.detail)

    async def _forward(self, payload: bytes) -> None:
        kind, argument, frame, fields = route(payload)
        if kind == KIND_ADDED:
            await self._added(argument, frame)
            return
        if kind == KIND_PRESENCE:  # one copy per chat shared with that person: the first goes out
            if fields.user_id != self.user_id and self._presence.fresh(frame):
                await self._send(frame)
            return
        state = self.chats.get(fields.chat_id or NO_CHAT)
        if state is None:
            return  # a chat the person has left: nothing of it follows the removal
        message = fields.message
        if kind in _CHANGES and message is not None and state.sent_rev is not None:
            if message.rev <= state.sent_rev:
                return  # replayed already, by rev
            state.sent_seq = max(state.sent_seq, message.seq)
        if kind == KIND_MESSAGE and message is not None:
            if state.sent_rev is None and message.seq <= state.sent_seq:
                return  # sent already, during a replay
            state.sent_seq = max(state.sent_seq, message.seq)
            if message.sender_id == self.user_id:
                state.read_seq = max(state.read_seq, message.seq)  # a send moves the sender's marker
            frame = f'{frame[:-1]},"unread_count":{state.unread(message.seq)}}}'
        elif kind == KIND_TYPING and argument == self._socket_id_bytes:
            return
        elif kind == KIND_REMOVED and fields.user_id == self.user_id:
            await self._removed(fields.chat_id or NO_CHAT)
            return
        elif fields.type == "read" and fields.user_id == self.user_id and fields.seq is not None:
            state.read_seq = max(state.read_seq, fields.seq)
        await self._send(frame)
        if METERS.on:
            count_delivery(kind)

    async def _removed(self, chat_id: int) -> None:
        """The person left the chat: tell the device, and hear nothing more of it."""
        del self.chats[chat_id]
        await self._registry.leave(self._subscriber, [chat_channel(chat_id)])
        await self._send(encode(ChatRemovedFrame(chat_id=chat_id)))

    async def _added(self, argument: bytes, frame: str) -> None:
        """The person is in a new chat: announce it, subscribe, and replay what came before that took."""
        chat_id, last_seq, read_seq = (int(part) for part in argument.split(b" "))
        if chat_id in self.chats:
            return  # announced or synced already: the opening read it
        state = self.chats[chat_id] = ChatState(last_seq, read_seq)
        await self._send(frame)
        await self._registry.join(self._subscriber, [chat_channel(chat_id)])
        async with unit_of_work(self._sessions) as session:
            now = await member_last_seq(session, chat_id, self.user_id)
        if now is None:  # removed again before the subscription took
            await self._removed(chat_id)
        elif now > state.sent_seq:
            await self._replay(chat_id, state, state.sent_seq)

    async def _replay(self, chat_id: int, state: ChatState, after_seq: int) -> None:
        stops, limit = self._replay_stops, self._limit
        sent_up_to = await replay(
            self._send, self._sessions, chat_id, after_seq, stops, limit, unread_of=state.unread
        )
        state.sent_seq = sent_up_to  # after a resync, the chat's last seq (the client pages /history)

    async def _replay_changes(self, chat_id: int, state: ChatState, after_rev: int) -> None:
        stops, limit = self._replay_stops, self._limit
        state.sent_rev, top_seq = await replay_changes(
            self._send, self._sessions, chat_id, after_rev, stops, limit, unread_of=state.unread
        )
        state.sent_seq = max(state.sent_seq, top_seq)

    def _replay_stops(self) -> bool:
        """Whether a replay must stop: the socket closed, or live events pile up behind a slow replay."""
        if self._subscriber.qsize > self._backlog:
            raise FellBehind
        return self._closed

    # Opening ---------------------------------------------------------------------------------------

    async def _open(self) -> None:
        """Serve the opening: the chats as they are now that the gateway hears them, and ``sync``.

        Chats joined after the handshake's read are left to their ``chat_added`` event, which the
        person's channel (subscribed before that read) brings; chats left meanwhile get ``chat_removed``.
        """
        known = self._known or {}
        async with unit_of_work(self._sessions) as session:
            now = await memberships(session, self.user_id)
        gone = [chat_id for chat_id in known if chat_id not in now]
        if gone:
            await self._registry.leave(self._subscriber, [chat_channel(chat_id) for chat_id in gone])
        sync = self._sync
        wanted = sync.chats if sync is not None else None
        by_rev = sync.revs if sync is not None else {}
        # Left since the handshake's read (their removal events may have come before the chat was
        # followed), or named by the sync and left while the device was away.
        removed = set(gone) | ((wanted.keys() | by_rev.keys()) - now.keys() if wanted is not None else set())
        for chat_id in sorted(removed):
            await self._send(encode(ChatRemovedFrame(chat_id=chat_id)))
        unnamed: list[int] = []
        for chat_id, (_, handshake_seq) in known.items():
            if chat_id not in now:
                continue
            read_seq, last_seq = now[chat_id]
            if chat_id in by_rev:
                state = self.chats[chat_id] = ChatState(0, read_seq, by_rev[chat_id])
                await self._replay_changes(chat_id, state, by_rev[chat_id])
                continue
            if wanted is not None and chat_id not in wanted:
                unnamed.append(chat_id)
                continue
            after_seq = wanted[chat_id] if wanted is not None else handshake_seq
            state = self.chats[chat_id] = ChatState(after_seq, read_seq)
            if last_seq != after_seq:
                await self._replay(chat_id, state, after_seq)
        if wanted is not None:
            await self._announce(unnamed)
            await self._send(encode(SyncedFrame()))
        self._known = self._sync = None  # what the opening needed is not kept for the gateway's life

    async def _announce(self, chat_ids: list[int]) -> None:
        """``chat_added`` for chats the device did not name in its sync, each with its inbox entry."""
        if not chat_ids:
            return
        async with unit_of_work(self._sessions) as session:
            views = await chat_views(
                session, self.user_id, chat_ids=chat_ids, member_limit=INBOX_MEMBERS, online=self._online
            )
        for _, entry in reversed(views):  # oldest activity first: the most recent ends on top
            last_seq = entry.last_message.seq if entry.last_message is not None else 0
            self.chats[entry.id] = ChatState(last_seq, last_seq - entry.unread_count)
            await self._send(encode(ChatAddedFrame(chat=entry)))
        for chat_id in set(chat_ids) - self.chats.keys():  # left between the two reads
            await self._registry.leave(self._subscriber, [chat_channel(chat_id)])


MAX_REASON = 120  # a close reason is at most 123 bytes; details are ASCII


def _is_sync(raw: str | bytes) -> bool:
    """Whether a frame that failed to decode meant to be a ``sync``."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False
    return isinstance(value, dict) and value.get("type") == "sync"
