"""Passwords, tokens, and the token check shared by HTTP and the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import OAuth2PasswordBearerAuth, Token
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

__all__ = (
    "Auth",
    "CurrentUser",
    "PasswordHasher",
    "SessionCheck",
    "TokenClaims",
    "TokenCodec",
    "create_auth",
)

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub")
T = TypeVar("T")


class CurrentUser(msgspec.Struct, frozen=True):
    """The authenticated caller, as proven by the token; enough to authorise without a query."""

    id: int
    session_id: str


class PasswordHasher:
    """argon2 hashing that keeps the event loop free: each hash takes tens of milliseconds of CPU.

    Hashes run in the process's hashing threads: at most one per spare core, at the lowest CPU priority.
    A burst of logins then queues for its turn, and what CPU it gets is what the event loop and the
    database leave over: other people's sends and reads do not slow down behind someone's logins.
    """

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._hash = PasswordHash((hasher,))
        # Verifying against this when the email is unknown makes both failures take the same time.
        self._dummy_hash = self._hash.hash("not a real password, only for timing")

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(_hashing_threads(), function, *args)

    async def hash(self, password: str) -> str:
        return await self._run(self._hash.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """Return (valid, new hash if the stored one uses outdated parameters)."""
        if password_hash is None:
            await self._run(self._hash.verify, password, self._dummy_hash)
            return False, None
        return await self._run(self._hash.verify_and_update, password, password_hash)


@functools.cache
def _hashing_threads() -> ThreadPoolExecutor:
    """The process's hashing threads, made on the first hash."""
    spare = max(1, (os.cpu_count() or 1) - 1)
    return ThreadPoolExecutor(spare, thread_name_prefix="windi-hash", initializer=_lowest_priority)


def _lowest_priority() -> None:
    """Give this thread (on Linux, a priority is per thread) the lowest CPU priority, where allowed."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class TokenClaims(msgspec.Struct, frozen=True):
    """What a valid access token proves: whose it is, which session it belongs to, until when."""

    user_id: int
    session_id: str
    expires_at: datetime


# Whether the session ``(session id, user id)`` is still live (``revocations.SessionGate.is_live``).
SessionCheck = Callable[[str, int], Awaitable[bool]]


async def _no_session_is_live(_session_id: str, _user_id: int) -> bool:
    return False


@dataclass
class SessionToken(Token):
    """Litestar's token with the session id as a top-level claim."""

    sid: str | None = None


def _claims(token: Token) -> TokenClaims | None:
    """The claims of a decoded token, or None when ``sub`` is not a user id or ``sid`` is missing.

    Tokens issued before sessions existed carry no ``sid``: they prove nothing.
    """
    session_id = token.sid if isinstance(token, SessionToken) else None
    try:
        user_id = int(token.sub)
    except ValueError:
        return None
    if not isinstance(session_id, str) or not session_id:
        return None
    return TokenClaims(user_id=user_id, session_id=session_id, expires_at=token.exp)


Auth = OAuth2PasswordBearerAuth[CurrentUser, SessionToken]


def create_auth(secret: str, ttl: timedelta, session_is_live: SessionCheck = _no_session_is_live) -> Auth:
    """The bearer-token middleware and the OAuth2 password scheme that Swagger's Authorize uses.

    A token passes when it is valid and ``session_is_live`` says its session was not revoked.

    The WebSocket paths (``/ws/{chat_id}`` and the gateway, ``/ws``) are excluded: a middleware failure
    there would refuse the handshake with an HTTP status, which browsers cannot read; the socket checks
    its token itself (with :class:`TokenCodec`, on this same object) and closes with 4401.
    """

    async def retrieve_user(
        token: Token, _connection: ASGIConnection[Any, Any, Any, Any]
    ) -> CurrentUser | None:
        claims = _claims(token)
        if claims is None or not await session_is_live(claims.session_id, claims.user_id):
            return None
        return CurrentUser(id=claims.user_id, session_id=claims.session_id)

    return Auth(
        token_secret=secret,
        token_url="/login",  # noqa: S106 - a URL, not a password
        algorithm=ALGORITHM,
        require_claims=REQUIRED_CLAIMS,
        retrieve_user_handler=retrieve_user,
        token_cls=SessionToken,
        default_token_expiration=ttl,
        exclude=[
            r"^/register$",
            r"^/login$",
            r"^/token/refresh$",
            r"^/health$",
            r"^/docs",
            r"^/ws/",
            r"^/ws$",
        ],
    )


class TokenCodec:
    """Issues and reads access tokens: HS256 only, with ``exp``, ``iat``, ``sub``, ``sid`` and ``jti``.

    Both go through the one ``auth`` object whose middleware guards HTTP, so the socket and HTTP can
    never accept different tokens. Reading checks the signature and claims only; whether the session
    is still live is the caller's question (:class:`windi_chat.revocations.SessionGate`).
    """

    __slots__ = ("auth",)

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    @classmethod
    def create(cls, secret: str, ttl: timedelta) -> TokenCodec:
        return cls(create_auth(secret, ttl))

    @property
    def ttl(self) -> timedelta:
        return self.auth.default_token_expiration

    def issue(self, user_id: int, session_id: str) -> str:
        now = datetime.now(UTC)
        token = SessionToken(
            sub=str(user_id),
            exp=now + self.ttl,
            iat=now,
            jti=secrets.token_urlsafe(12),
            sid=session_id,
        )
        return token.encode(self.auth.token_secret, self.auth.algorithm)

    def read(self, encoded: str) -> TokenClaims | None:
        """What the token proves, or None for any bad token (expired, tampered, wrong alg, no sid...)."""
        auth = self.auth
        try:
            token = auth.token_cls.decode(
                encoded_token=encoded,
                secret=auth.token_secret,
                algorithm=auth.algorithm,
                audience=auth.accepted_audiences,
                issuer=auth.accepted_issuers,
                require_claims=auth.require_claims,
                verify_exp=auth.verify_expiry,
                verify_nbf=auth.verify_not_before,
                strict_audience=auth.strict_audience,
            )
        except NotAuthorizedException:
            return None
        return _claims(token)

    def user_id(self, encoded: str) -> int | None:
        """The user id the token proves, or None for any bad token."""
        claims = self.read(encoded)
        return None if claims is None else claims.user_id
