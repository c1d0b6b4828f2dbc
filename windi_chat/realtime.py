"""The WebSocket ``/ws/{chat_id}``: live delivery through channels, client frames through the actions.

A socket subscribes to its chat's channel before it checks membership and accepts, so it misses nothing
published after the handshake, its own removal included. Each socket runs two loops: one reads client
frames in order and calls the messaging actions; the other forwards the chat's events. Nothing here
writes SQL.

The socket's loops are in ``connection``.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from windi_chat.config import Settings
from windi_chat.connection import ChatConnection, SocketContext
from windi_chat.database import unit_of_work
from windi_chat.errors import (
    ChatNotFoundError,
    DomainError,
    UnauthenticatedError,
)
from windi_chat.events import EventBus
from windi_chat.handshake import Admission, Refusal, check_handshake, refuse
from windi_chat.inputs import is_id
from windi_chat.limits import PersonLimits
from windi_chat.messaging import member_position
from windi_chat.origins import OriginPolicy
from windi_chat.protocol import close_code, warn_if_unavailable
from windi_chat.revocations import SessionGate
from windi_chat.seam import SocketFeed
from windi_chat.security import TokenCodec
from windi_chat.sockets import CLOSE_TOO_MANY, SocketRegistry
from windi_chat.writer import MessageWriter

__all__ = ("chat_socket",)

logger = logging.getLogger("windi_chat.realtime")


@websocket("/ws/{chat_id:int}", name="chat_socket")
async def chat_socket(
    socket: WebSocket[Any, Any, Any],
    chat_id: FromPath[int],
    tokens: NamedDependency[TokenCodec],
    gate: NamedDependency[SessionGate],
    events: NamedDependency[EventBus],
    sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    settings: NamedDependency[Settings],
    registry: NamedDependency[SocketRegistry],
    writer: NamedDependency[MessageWriter],
    origins: NamedDependency[OriginPolicy],
    limits: NamedDependency[PersonLimits],
) -> None:
    """The live connection of one device to one chat. The token comes as ``?token=`` or a bearer header."""
    admission = check_handshake(socket, tokens, origins, registry.closing)
    if isinstance(admission, Refusal):
        await refuse(socket, *admission)
        return
    if not is_id(chat_id):  # no chat can have it: refused as a chat the caller is not in
        missing = ChatNotFoundError()
        await refuse(socket, close_code(missing), missing.detail)
        return
    user_id = admission.claims.user_id
    # Counted before the first await, so concurrent handshakes of one person cannot all slip past.
    if not limits.sockets.acquire(user_id):
        await refuse(socket, CLOSE_TOO_MANY, "too many connections")
        return
    shared = SocketContext(events, sessions, settings, tokens, gate, writer, limits, registry.turns)
    try:
        await _serve(socket, chat_id, admission, registry, shared)
    finally:
        limits.sockets.release(user_id)


async def _serve(
    socket: WebSocket[Any, Any, Any],
    chat_id: int,
    admission: Admission,
    registry: SocketRegistry,
    shared: SocketContext,
) -> None:
    """Subscribe, check membership, accept, and run the socket until it ends."""
    claims, after_seq, after_rev = admission
    user_id = claims.user_id
    # Subscribed before membership is checked: a removal that commits after the check is published
    # after it too, so this socket hears it and closes; one that commits before fails the check.
    subscriber = await registry.subscribe(chat_id)
    try:
        try:
            if not await shared.gate.is_live(claims.session_id, user_id):
                raise UnauthenticatedError("session ended; log in again")
            async with unit_of_work(shared.sessions) as session:
                position = await member_position(session, chat_id, user_id)
            if position is None:
                raise ChatNotFoundError
        except DomainError as error:
            warn_if_unavailable(error, "handshake")
            await refuse(socket, close_code(error), error.detail)
            return
        await socket.accept()
        feed = SocketFeed(*position, by_rev=after_rev is not None)
        connection = ChatConnection(socket, chat_id, claims, subscriber, shared, feed)
        registry.add(connection)
        logger.info("Socket opened: chat_id=%s user_id=%s socket=%s", chat_id, user_id, connection.socket_id)
        try:
            # A revocation heard between the check above and ``add`` found no socket to close: ask
            # again, now that the registry would close this one.
            if await connection.still_live():
                await connection.serve(after_seq, after_rev)
        finally:
            registry.discard(connection)
        logger.info("Socket closed: chat_id=%s user_id=%s socket=%s", chat_id, user_id, connection.socket_id)
    finally:
        await registry.unsubscribe(subscriber, chat_id)
