"""Sessions: one per login, kept alive by rotating refresh tokens, ended by logout or revocation.

A refresh token is an opaque random string, stored only as its SHA-256. Each refresh spends it and
hands out a new one; presenting a spent one again means two parties hold copies, so the whole session
is revoked and neither copy works any more. Every revocation is published when it commits, so every
process stops accepting the session's access tokens and closes its sockets (see ``revocations``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.errors import InvalidRefreshTokenError, SessionNotFoundError, WrongPasswordError
from windi_chat.events import EventBus
from windi_chat.login_attempts import LoginAttempts
from windi_chat.models import LoginSession, RefreshToken, User, utcnow
from windi_chat.schemas import SessionOut, TokenOut
from windi_chat.security import PasswordHasher, TokenCodec

__all__ = (
    "Started",
    "change_password",
    "list_sessions",
    "prove_password",
    "refresh_session",
    "revoke_other_sessions",
    "revoke_session",
    "start_session",
    "token_out",
)

logger = logging.getLogger("windi_chat.sessions")

MAX_USER_AGENT = 255


@dataclass(frozen=True, slots=True)
class Started:
    """A session with the refresh token the client now holds (the only time it is seen in clear)."""

    session_id: str
    user_id: int
    refresh_token: str


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


def _new_refresh_token(db: AsyncSession, session_id: str) -> str:
    token = secrets.token_urlsafe(32)
    db.add(RefreshToken(token_hash=_digest(token), session_id=session_id))
    return token


async def start_session(db: AsyncSession, user_id: int, user_agent: str, ttl: timedelta) -> Started:
    """A new session for a person who just proved their password."""
    now = utcnow()
    session = LoginSession(
        id=secrets.token_urlsafe(16),
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        user_agent=user_agent[:MAX_USER_AGENT],
        expires_at=now + ttl,
    )
    db.add(session)
    await db.flush()
    refresh_token = _new_refresh_token(db, session.id)
    await db.commit()
    logger.info("Session started: user_id=%s session=%s", user_id, session.id)
    return Started(session.id, user_id, refresh_token)


async def refresh_session(db: AsyncSession, events: EventBus, refresh_token: str, ttl: timedelta) -> Started:
    """Spend ``refresh_token`` for a new one; a spent one revokes its session.

    Spending is one conditional UPDATE, so of two refreshes racing with one token exactly one wins and
    the other counts as reuse.
    """
    digest = _digest(refresh_token)
    now = utcnow()
    row = (
        await db.execute(
            select(LoginSession, RefreshToken.spent_at)
            .join(RefreshToken, RefreshToken.session_id == LoginSession.id)
            .where(RefreshToken.token_hash == digest)
        )
    ).one_or_none()
    if row is None:
        raise InvalidRefreshTokenError
    session, spent_at = row
    if session.revoked_at is not None or session.expires_at <= now:
        raise InvalidRefreshTokenError
    spent = await db.scalar(
        update(RefreshToken)
        .where(RefreshToken.token_hash == digest, RefreshToken.spent_at.is_(None))
        .values(spent_at=now)
        .returning(RefreshToken.token_hash)
    )
    if spent_at is not None or spent is None:
        logger.warning("Refresh token reused: revoking session %s of user_id=%s", session.id, session.user_id)
        await _revoke(db, events, [session.id])
        await db.commit()
        raise InvalidRefreshTokenError
    session.last_used_at = now
    session.expires_at = now + ttl
    new_token = _new_refresh_token(db, session.id)
    await db.commit()
    return Started(session.id, session.user_id, new_token)


async def list_sessions(db: AsyncSession, user_id: int, current_id: str) -> list[SessionOut]:
    """The person's live sessions, most recently used first."""
    rows = await db.scalars(
        select(LoginSession)
        .where(*_live_of(user_id))
        .order_by(LoginSession.last_used_at.desc(), LoginSession.id)
    )
    return [
        SessionOut(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            user_agent=row.user_agent,
            current=row.id == current_id,
        )
        for row in rows
    ]


async def revoke_session(db: AsyncSession, events: EventBus, user_id: int, session_id: str) -> None:
    """Revoke one live session of the person; anything else is not found."""
    owned = await db.scalar(select(LoginSession.id).where(LoginSession.id == session_id, *_live_of(user_id)))
    if owned is None:
        raise SessionNotFoundError
    await _revoke(db, events, [owned])
    await db.commit()


async def revoke_other_sessions(db: AsyncSession, events: EventBus, user_id: int, keep_id: str) -> int:
    """Revoke every live session of the person but ``keep_id``; how many were revoked."""
    others = list(
        await db.scalars(select(LoginSession.id).where(*_live_of(user_id), LoginSession.id != keep_id))
    )
    await _revoke(db, events, others)
    await db.commit()
    return len(others)


async def prove_password(
    db: AsyncSession, check: tuple[PasswordHasher, LoginAttempts], user_id: int, password: str
) -> User:
    """The signed-in person, once their password is proven; :class:`WrongPasswordError` if it is not.

    Wrong passwords count towards the account's login lock, as a login's would. No connection is held
    while argon2 runs.
    """
    hasher, attempts = check
    user = await db.get(User, user_id)
    await db.commit()  # hands the connection back to the pool while argon2 runs (nothing is written yet)
    if user is None:
        raise WrongPasswordError
    await attempts.check(user.email)
    valid, _ = await hasher.verify(password, user.password_hash)
    if not valid:
        raise WrongPasswordError
    await attempts.succeeded(user.email)
    return user


async def change_password(
    db: AsyncSession,
    events: EventBus,
    hasher: PasswordHasher,
    attempts: LoginAttempts,
    user_id: int,
    keep_id: str,
    passwords: tuple[str, str],
) -> None:
    """Set a new password once the current one is proven; every other session of the person ends."""
    current_password, new_password = passwords
    user = await prove_password(db, (hasher, attempts), user_id, current_password)
    user.password_hash = await hasher.hash(new_password)
    others = await revoke_other_sessions(db, events, user_id, keep_id)
    logger.info("Password changed: user_id=%s (%d other sessions revoked)", user_id, others)


def _live_of(user_id: int) -> tuple[ColumnElement[bool], ...]:
    return (
        LoginSession.user_id == user_id,
        LoginSession.revoked_at.is_(None),
        LoginSession.expires_at > utcnow(),
    )


async def _revoke(db: AsyncSession, events: EventBus, session_ids: Sequence[str]) -> None:
    """Mark the sessions revoked and drop their refresh tokens (a revoked session's tokens prove nothing)."""
    if not session_ids:
        return
    ids = list(session_ids)
    await db.execute(
        update(LoginSession)
        .where(LoginSession.id.in_(ids), LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    await db.execute(delete(RefreshToken).where(RefreshToken.session_id.in_(ids)))
    events.sessions_revoked(db, ids)
    logger.info("Sessions revoked: %s", ", ".join(ids))


def token_out(tokens: TokenCodec, started: Started) -> TokenOut:
    """The answer of login and refresh: a new access token for the session and its refresh token."""
    return TokenOut(
        access_token=tokens.issue(started.user_id, started.session_id),
        token_type="bearer",  # noqa: S106 - the OAuth2 token type
        expires_in=int(tokens.ttl.total_seconds()),
        refresh_token=started.refresh_token,
    )
