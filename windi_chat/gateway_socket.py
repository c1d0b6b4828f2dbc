"""The WebSocket ``/ws``: a device's gateway to every chat its person is in (see ``gateway``).

The handshake passes the chat socket's checks (shutdown, Origin, token, the per-person socket cap) and
is refused with 1013 while live delivery is down (degraded mode), since a gateway is not served from
the database: it syncs again once delivery is back. The gateway subscribes to its person's own channel
before it reads their chats, and to the chats' channels before it accepts, so an addition or a
removal that commits after that read is heard, and one that commits before it is in the read.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.chat_views import memberships
from windi_chat.config import Settings
from windi_chat.connection_core import SocketContext
from windi_chat.database import unit_of_work
from windi_chat.errors import DomainError, UnauthenticatedError
from windi_chat.events import EventBus, chat_channel, user_channel
from windi_chat.gateway import Gateway
from windi_chat.handshake import Refusal, check_handshake, refuse
from windi_chat.limits import PersonLimits
from windi_chat.origins import OriginPolicy
from windi_chat.presence import Presence
from windi_chat.protocol import close_code, warn_if_unavailable
from windi_chat.revocations import SessionGate
from windi_chat.security import TokenClaims, TokenCodec
from windi_chat.sockets import CLOSE_TOO_MANY, CLOSE_TRY_AGAIN, SocketRegistry
from windi_chat.writer import MessageWriter

__all__ = ("gateway_socket",)

logger = logging.getLogger("windi_chat.realtime")

DEGRADED = "live delivery is down; sync again later"


@websocket("/ws", name="gateway")
async def gateway_socket(
    socket: WebSocket[Any, Any, Any],
    tokens: NamedDependency[TokenCodec],
    gate: NamedDependency[SessionGate],
    events: NamedDependency[EventBus],
    sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    settings: NamedDependency[Settings],
    registry: NamedDependency[SocketRegistry],
    writer: NamedDependency[MessageWriter],
    origins: NamedDependency[OriginPolicy],
    limits: NamedDependency[PersonLimits],
    presence: NamedDependency[Presence],
) -> None:
    """One device's live connection to all of its person's chats. The token comes as ``?token=`` or a
    bearer header; the first frame may be ``sync``.
    """
    admission = check_handshake(socket, tokens, origins, registry.closing)
    if isinstance(admission, Refusal):
        await refuse(socket, *admission)
        return
    if registry.degraded:
        await refuse(socket, CLOSE_TRY_AGAIN, DEGRADED)
        return
    user_id = admission.claims.user_id
    # Counted with the chat sockets, before the first await, as they are.
    if not limits.sockets.acquire(user_id):
        await refuse(socket, CLOSE_TOO_MANY, "too many connections")
        return
    shared = SocketContext(events, sessions, settings, tokens, gate, writer, limits, registry.turns)
    try:
        await _serve(socket, admission.claims, registry, shared, presence)
    finally:
        limits.sockets.release(user_id)


async def _serve(
    socket: WebSocket[Any, Any, Any],
    claims: TokenClaims,
    registry: SocketRegistry,
    shared: SocketContext,
    presence: Presence,
) -> None:
    """Subscribe, read the person's chats, subscribe to them, accept, and run the gateway until it ends."""
    user_id = claims.user_id
    subscriber = await registry.subscribe_many([user_channel(user_id)])
    joined: set[str] = set()
    try:
        try:
            if not await shared.gate.is_live(claims.session_id, user_id):
                raise UnauthenticatedError("session ended; log in again")
            async with unit_of_work(shared.sessions) as session:
                known = await memberships(session, user_id)
            joined = {chat_channel(chat_id) for chat_id in known}
            await registry.join(subscriber, joined)
        except DomainError as error:
            warn_if_unavailable(error, "gateway handshake")
            await refuse(socket, close_code(error), error.detail)
            return
        await socket.accept()
        gateway = Gateway(socket, claims, shared, registry, subscriber, known, presence.is_online)
        logger.info("Gateway opened: user_id=%s chats=%d socket=%s", user_id, len(known), gateway.socket_id)
        del known  # the gateway keeps what it needs; this frame lives as long as the gateway
        joined = set()  # ...and knows which channels it is on
        registry.add_gateway(gateway)
        try:
            await _live(gateway, registry, presence, shared.settings.sync_wait_seconds)
        finally:
            registry.discard_gateway(gateway)
            joined = gateway.channels()
        logger.info("Gateway closed: user_id=%s socket=%s", user_id, gateway.socket_id)
    finally:
        await registry.leave(subscriber, [user_channel(user_id), *joined])


async def _live(gateway: Gateway, registry: SocketRegistry, presence: Presence, wait: float) -> None:
    """Run an accepted gateway, its person online meanwhile, unless it must end at once."""
    if registry.degraded:  # went down since the handshake's check: nothing tells this one
        await gateway.close(CLOSE_TRY_AGAIN, DEGRADED)
    elif await gateway.still_live() and await gateway.opening(wait):
        await presence.opened(gateway.user_id)
        try:
            await gateway.serve()
        finally:
            with anyio.CancelScope(shield=True):
                await presence.closed(gateway.user_id)
