"""The checks a socket handshake passes before it may subscribe: shutdown, Origin, token, ``after_seq`` or
``after_rev``.

They read only the handshake request, so they run before anything touches the database or live
delivery. Membership is checked later, once subscribed (see :func:`windi_chat.realtime.chat_socket`).
Every refusal is sent the same way: accept, then close with a code a browser can read.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from litestar import WebSocket

from windi_chat.inputs import MAX_ID
from windi_chat.origins import OriginPolicy
from windi_chat.security import TokenClaims, TokenCodec
from windi_chat.sockets import CLOSE_BAD_REQUEST, CLOSE_FORBIDDEN, CLOSE_GOING_AWAY, CLOSE_UNAUTHORIZED

__all__ = ("Admission", "Refusal", "check_handshake", "refuse")

logger = logging.getLogger("windi_chat.realtime")


class Admission(NamedTuple):
    """What the token proves, and from which seq or rev the client wants to catch up (None: live only)."""

    claims: TokenClaims
    after_seq: int | None
    after_rev: int | None = None


class Refusal(NamedTuple):
    code: int
    reason: str


def check_handshake(
    socket: WebSocket[Any, Any, Any], tokens: TokenCodec, origins: OriginPolicy, closing: bool
) -> Admission | Refusal:
    """Admit or refuse a handshake on what its request carries (``?token=`` or a bearer header)."""
    if closing:
        return Refusal(CLOSE_GOING_AWAY, "server shutting down")
    if not origins.allows(socket):
        logger.info("Socket refused: origin %r is not allowed", socket.headers.get("origin", "")[:100])
        return Refusal(CLOSE_FORBIDDEN, "origin not allowed")
    token = _token_of(socket)
    claims = tokens.read(token) if token else None
    if claims is None:
        return Refusal(CLOSE_UNAUTHORIZED, "missing, invalid or expired token")
    after_seq, after_rev = _counter(socket, "after_seq"), _counter(socket, "after_rev")
    if isinstance(after_seq, Refusal):
        return after_seq
    if isinstance(after_rev, Refusal):
        return after_rev
    if after_seq is not None and after_rev is not None:
        # One replay, one rule for copies: a socket follows new messages by seq or every change by rev.
        return Refusal(CLOSE_BAD_REQUEST, "use one of after_seq and after_rev")
    return Admission(claims, after_seq, after_rev)


def _counter(socket: WebSocket[Any, Any, Any], name: str) -> int | Refusal | None:
    """A catch-up point from the query string: absent, a valid seq or rev, or a refusal."""
    raw = socket.query_params.get(name)
    if raw is None:
        return None
    # Length first: int() of a long enough string of digits raises, and no counter has more than 19.
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 19
    if not (digits and int(raw) <= MAX_ID):
        return Refusal(CLOSE_BAD_REQUEST, f"{name} must be an integer from 0 to 2**63-1")
    return int(raw)


def _token_of(socket: WebSocket[Any, Any, Any]) -> str | None:
    token: str | None = socket.query_params.get("token")
    if token:
        return token
    scheme, _, credentials = socket.headers.get("authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


async def refuse(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    """Accept, then close at once: browsers can read a close code, not an HTTP status."""
    await socket.accept()
    await socket.close(code=code, reason=reason)
