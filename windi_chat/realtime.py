"""The WebSocket ``/ws/{chat_id}``: live delivery through channels, client frames through the actions.

A socket subscribes to its chat's channel before it accepts, so it misses nothing published after the
handshake. Each socket runs two loops: one reads client frames in order and calls the messaging
actions; the other forwards the chat's events. Nothing here writes SQL.

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
from windi_chat.messaging import can_read
from windi_chat.protocol import close_code
from windi_chat.revocations import SessionGate
from windi_chat.security import TokenCodec
from windi_chat.sockets import (
    CLOSE_BAD_REQUEST,
    CLOSE_GOING_AWAY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    SocketRegistry,
)

__all__ = ("chat_socket",)

logger = logging.getLogger("windi_chat.realtime")


def _token_of(socket: WebSocket[Any, Any, Any]) -> str | None:
    token: str | None = socket.query_params.get("token")
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
    gate: NamedDependency[SessionGate],
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
    claims = tokens.read(token) if token else None
    if claims is None:
        await _refuse(socket, CLOSE_UNAUTHORIZED, "missing, invalid or expired token")
        return
    user_id = claims.user_id
    raw_after = socket.query_params.get("after_seq")
    after_seq = (
        int(raw_after) if raw_after is not None and raw_after.isascii() and raw_after.isdigit() else None
    )
    if raw_after is not None and after_seq is None:
        await _refuse(socket, CLOSE_BAD_REQUEST, "after_seq must be a non-negative integer")
        return
    try:
        if not await gate.is_live(claims.session_id, user_id):
            raise UnauthenticatedError("session ended; log in again")
        async with unit_of_work(sessions) as session:
            if not await can_read(session, chat_id, user_id):
                raise ChatNotFoundError
    except DomainError as error:
        await _refuse(socket, close_code(error), error.detail)
        return
    subscriber = await registry.subscribe(chat_id)
    if subscriber is None:
        await _refuse(socket, CLOSE_TRY_AGAIN, "live delivery unavailable")
        return
    try:
        await socket.accept()
        shared = SocketContext(events, sessions, settings, tokens, gate)
        connection = ChatConnection(socket, chat_id, claims, subscriber, shared)
        registry.add(connection)
        logger.info("Socket opened: chat_id=%s user_id=%s socket=%s", chat_id, user_id, connection.socket_id)
        try:
            # A revocation heard between the check above and ``add`` found no socket to close: ask
            # again, now that the registry would close this one.
            if await connection.still_live():
                await connection.serve(after_seq)
        finally:
            registry.discard(connection)
        logger.info("Socket closed: chat_id=%s user_id=%s socket=%s", chat_id, user_id, connection.socket_id)
    finally:
        await registry.unsubscribe(subscriber)
