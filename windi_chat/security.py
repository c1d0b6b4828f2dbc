"""Passwords, tokens, and the token check shared by HTTP and the WebSocket."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import jwt
import msgspec
from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection
from litestar.security.jwt import OAuth2PasswordBearerAuth, Token
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from windi_chat.config import Settings

__all__ = ("CurrentUser", "PasswordHasher", "TokenCodec", "create_auth")

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub")
T = TypeVar("T")


class CurrentUser(msgspec.Struct, frozen=True):
    """The authenticated caller, as proven by the token; enough to authorise without a query."""

    id: int


class PasswordHasher:
    """argon2 hashing that keeps the event loop free: each hash takes tens of milliseconds of CPU.

    Hashes run in worker threads, one lane each, and at most one per spare core at a time: a burst of
    logins then queues for its turn instead of taking every core from the sockets' event loop.
    """

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._hash = PasswordHash((hasher,))
        self._turns = anyio.Semaphore(max(1, (os.cpu_count() or 1) - 1))
        # Verifying against this when the email is unknown makes both failures take the same time.
        self._dummy_hash = self._hash.hash("not a real password, only for timing")

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        async with self._turns:
            return await sync_to_thread(function, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._hash.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """Return (valid, new hash if the stored one uses outdated parameters)."""
        if password_hash is None:
            await self._run(self._hash.verify, password, self._dummy_hash)
            return False, None
        return await self._run(self._hash.verify_and_update, password, password_hash)


@dataclass(frozen=True)
class TokenCodec:
    """Issues and checks access tokens: HS256 only, with ``exp``, ``iat`` and ``sub`` required."""

    secret: str
    ttl: timedelta

    def issue(self, user_id: int) -> str:
        now = datetime.now(UTC)
        return Token(sub=str(user_id), exp=now + self.ttl, iat=now).encode(self.secret, ALGORITHM)

    def user_id(self, encoded: str) -> int | None:
        """The user id the token proves, or None for any bad token (expired, tampered, wrong alg...)."""
        try:
            payload = jwt.decode(
                encoded, self.secret, algorithms=[ALGORITHM], options={"require": list(REQUIRED_CLAIMS)}
            )
            return int(payload["sub"])
        except (jwt.InvalidTokenError, ValueError, TypeError):
            return None


async def _retrieve_user(token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> CurrentUser | None:
    try:
        return CurrentUser(id=int(token.sub))
    except ValueError:
        return None


def create_auth(settings: Settings, secret: str) -> OAuth2PasswordBearerAuth[CurrentUser, Token]:
    """The bearer-token middleware and the OAuth2 password scheme that Swagger's Authorize uses.

    The WebSocket path is excluded: a middleware failure there would refuse the handshake with an HTTP
    status, which browsers cannot read; the socket checks its token itself and closes with 4401.
    """
    return OAuth2PasswordBearerAuth[CurrentUser, Token](
        token_secret=secret,
        token_url="/login",  # noqa: S106 - a URL, not a password
        algorithm=ALGORITHM,
        require_claims=REQUIRED_CLAIMS,
        retrieve_user_handler=_retrieve_user,
        default_token_expiration=timedelta(seconds=settings.token_ttl_seconds),
        exclude=[r"^/register$", r"^/login$", r"^/health$", r"^/docs", r"^/ws/"],
    )
