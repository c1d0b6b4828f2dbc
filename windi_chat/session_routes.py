"""Sessions over REST: refresh, logout, the list of one's sessions, revoking them, changing the password."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.config import Settings
from windi_chat.errors import (
    InvalidRefreshTokenError,
    RateLimitedError,
    SessionNotFoundError,
    WrongPasswordError,
)
from windi_chat.events import EventBus
from windi_chat.http_errors import error_responses
from windi_chat.inputs import SessionId
from windi_chat.login_attempts import LoginAttempts
from windi_chat.schemas import PasswordChangeIn, RefreshIn, SessionOut, TokenOut
from windi_chat.security import CurrentUser, PasswordHasher, TokenCodec
from windi_chat.sessions import (
    change_password,
    list_sessions,
    refresh_session,
    revoke_other_sessions,
    revoke_session,
    token_out,
)

__all__ = ("RefreshController", "SessionController")

Caller = Request[CurrentUser, Any, Any]


class RefreshController(Controller):
    """Refresh needs no access token (that one may have expired): the refresh token is the proof."""

    tags = ["accounts"]
    security = [{}]

    @post(
        "/token/refresh",
        operation_id="refreshToken",
        summary="A new access token for a refresh token (which is spent)",
        status_code=200,
        responses=error_responses(InvalidRefreshTokenError),
    )
    async def refresh(
        self,
        data: JSONBody[RefreshIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        tokens: NamedDependency[TokenCodec],
        settings: NamedDependency[Settings],
    ) -> TokenOut:
        """Answers like login, with a new refresh token. Presenting a spent refresh token again revokes
        its whole session. Unknown, expired, spent or revoked: 401.
        """
        ttl = timedelta(seconds=settings.refresh_ttl_seconds)
        return token_out(tokens, await refresh_session(db_session, events, data.refresh_token, ttl))


class SessionController(Controller):
    tags = ["accounts"]

    @post(
        "/logout", operation_id="logout", summary="End the caller's session", status_code=HTTP_204_NO_CONTENT
    )
    async def logout(
        self, request: Caller, db_session: NamedDependency[AsyncSession], events: NamedDependency[EventBus]
    ) -> None:
        """The session's access and refresh tokens stop working, and its sockets are closed (4401)."""
        await revoke_session(db_session, events, request.user.id, request.user.session_id)

    @get("/sessions", operation_id="listSessions", summary="The caller's live sessions")
    async def sessions(self, request: Caller, db_session: NamedDependency[AsyncSession]) -> list[SessionOut]:
        """Most recently used first; ``current`` is the one this request was made with."""
        return await list_sessions(db_session, request.user.id, request.user.session_id)

    @delete(
        "/sessions/{session_id:str}",
        operation_id="revokeSession",
        summary="End one of the caller's sessions",
        responses=error_responses(SessionNotFoundError),
    )
    async def revoke(
        self,
        request: Caller,
        session_id: SessionId,
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
    ) -> None:
        """404 for anything that is not one of the caller's live sessions."""
        await revoke_session(db_session, events, request.user.id, session_id)

    @delete("/sessions", operation_id="revokeOtherSessions", summary="End every session but the current one")
    async def revoke_others(
        self, request: Caller, db_session: NamedDependency[AsyncSession], events: NamedDependency[EventBus]
    ) -> None:
        await revoke_other_sessions(db_session, events, request.user.id, request.user.session_id)

    @post(
        "/users/me/password",
        operation_id="changePassword",
        summary="Change the caller's password",
        status_code=HTTP_204_NO_CONTENT,
        responses=error_responses(WrongPasswordError, RateLimitedError),
    )
    async def change_password(
        self,
        request: Caller,
        data: JSONBody[PasswordChangeIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        hasher: NamedDependency[PasswordHasher],
        attempts: NamedDependency[LoginAttempts],
    ) -> None:
        """The new password works at once; every other session of the caller ends. A wrong current
        password: 403. Wrong passwords count towards the account's login lock (429 while it holds).
        """
        passwords = (data.current_password, data.new_password)
        user = request.user
        await change_password(db_session, events, hasher, attempts, user.id, user.session_id, passwords)
