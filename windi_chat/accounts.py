"""Accounts: registration, login and finding people."""

from __future__ import annotations

import logging
import unicodedata
from datetime import timedelta
from typing import Annotated, Any

from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.params import JSONBody, QueryParameter, URLEncodedBody
from litestar.status_codes import HTTP_200_OK
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.account_deletion import delete_account_with_password
from windi_chat.config import Settings
from windi_chat.errors import (
    EmailTakenError,
    InvalidError,
    RateLimitedError,
    UserNotFoundError,
    WrongPasswordError,
)
from windi_chat.events import EventBus
from windi_chat.http_errors import error_responses
from windi_chat.login_attempts import LoginAttempts
from windi_chat.models import User
from windi_chat.schemas import (
    EMAIL_MAX_LENGTH,
    NO_NUL,
    AccountDeleteIn,
    LoginForm,
    PersonOut,
    RegisterIn,
    TokenOut,
    UserOut,
)
from windi_chat.security import CurrentUser, PasswordHasher, TokenCodec
from windi_chat.sessions import start_session, token_out

__all__ = ("AuthController", "UserController", "UserService", "create_rate_limit", "normalise_email")

logger = logging.getLogger("windi_chat.accounts")

INVALID_CREDENTIALS = "Incorrect email or password"


def normalise_email(email: str) -> str:
    """The one form an email is stored and compared in: NFKC, case-folded, without surrounding space.

    NFC and NFD spellings, full-width letters and case variants of one address are one account.
    Case folding can lengthen an address ("İ" becomes two characters), so the length is checked on
    the result.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email.strip()).casefold())
    if len(folded) > EMAIL_MAX_LENGTH:
        raise InvalidError(f"The email is longer than {EMAIL_MAX_LENGTH} characters once normalised")
    return folded


class UserService(SQLAlchemyAsyncRepositoryService[User]):
    """Users, with the rules on emails and passwords that the database alone does not state.

    argon2 takes tens of milliseconds and may queue for a free core: no pooled connection is held
    meanwhile, or a burst of logins would starve every other request of the pool. Reads end their
    transaction (handing the connection back) before hashing; the writes after it open another.
    """

    class Repo(SQLAlchemyAsyncRepository[User]):
        model_type = User

    repository_type = Repo

    async def _release_connection(self) -> None:
        # Nothing is written yet; committing ends the transaction and returns its connection to the pool.
        await self.repository.session.commit()

    async def register(self, data: RegisterIn, hasher: PasswordHasher) -> User:
        email = normalise_email(data.email)
        taken = await self.exists(email=email)
        await self._release_connection()
        if taken:
            raise EmailTakenError
        password_hash = await hasher.hash(data.password)
        try:
            user = await self.create(
                User(name=data.name.strip(), email=email, password_hash=password_hash), auto_commit=True
            )
        except IntegrityError as exc:
            # advanced-alchemy reports a lost connection as an IntegrityError too (any StatementError):
            # only the database's own integrity error (two registrations of one email at the same
            # moment) is a taken email; the rest goes to the database error handler (503 when down).
            if isinstance(exc.__cause__, sa_exc.IntegrityError):
                raise EmailTakenError from exc
            raise
        logger.info("User registered: user_id=%s", user.id)
        return user

    async def authenticate(self, email: str, password: str, hasher: PasswordHasher) -> User | None:
        """The user if the password matches; rehashes a hash made with outdated parameters."""
        user = await self.get_one_or_none(email=normalise_email(email))
        await self._release_connection()
        valid, new_hash = await hasher.verify(password, user.password_hash if user else None)
        if user is None or not valid:
            logger.info("Login failed: %s", f"user_id={user.id}" if user else "unknown email")
            return None
        if new_hash is not None:
            user.password_hash = new_hash
            await self.update(user, auto_commit=True)
            logger.info("Password hash upgraded: user_id=%s", user.id)
        logger.info("Login succeeded: user_id=%s", user.id)
        return user

    async def search(self, needle: str, limit: int, exclude_id: int) -> list[User]:
        """People whose name starts with ``needle``, or whose email is ``needle``, ignoring case.

        Only a whole email finds its owner, so walking prefixes lists no one's address.
        """
        name_prefix = needle.strip().lower()
        try:
            email = normalise_email(needle)
        except InvalidError:
            email = ""
        return list(
            await self.get_many(
                User.id != exclude_id,
                or_(func.lower(User.name).startswith(name_prefix, autoescape=True), User.email == email),
                OrderBy("name"),
                OrderBy("id"),
                LimitOffset(limit=limit, offset=0),
            )
        )


def to_user_out(user: User) -> UserOut:
    """The caller's own account, email included; anyone else is shown as a :class:`PersonOut`."""
    return UserOut(id=user.id, name=user.name, email=user.email)


class AuthController(Controller):
    """Register and log in; the only routes open without a token (with health and docs)."""

    tags = ["accounts"]
    security = [{}]

    @post(
        "/register",
        operation_id="register",
        summary="Create an account",
        responses=error_responses(EmailTakenError),
    )
    async def register(
        self,
        data: JSONBody[RegisterIn],
        users: NamedDependency[UserService],
        hasher: NamedDependency[PasswordHasher],
    ) -> UserOut:
        """Emails are compared after NFKC normalisation and case folding; a taken email gives 409."""
        return to_user_out(await users.register(data, hasher))

    @post(
        "/login",
        operation_id="login",
        summary="Log in (OAuth2 password form)",
        status_code=HTTP_200_OK,
        raises=[NotAuthorizedException, TooManyRequestsException],
    )
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[LoginForm],
        users: NamedDependency[UserService],
        hasher: NamedDependency[PasswordHasher],
        tokens: NamedDependency[TokenCodec],
        settings: NamedDependency[Settings],
        attempts: NamedDependency[LoginAttempts],
    ) -> TokenOut:
        """``username`` is the email. A wrong password and an unknown email give the same 401.

        After ``WINDI_LOGIN_MAX_FAILURES`` failures within the window, whatever the address, that email's
        logins answer 429 with ``Retry-After`` until the window ends. Each login is a new session (see
        ``GET /sessions``); its refresh token gets the next access token.
        """
        email = normalise_email(data.username)
        locked_for = await attempts.begin(email)
        if locked_for:
            raise TooManyRequestsException(
                "Too many failed logins for this account; try again later",
                headers={"Retry-After": str(locked_for)},
            )
        user = await users.authenticate(email, data.password, hasher)
        if user is None:
            raise NotAuthorizedException(INVALID_CREDENTIALS)
        await attempts.succeeded(email)
        user_agent = request.headers.get("user-agent", "")
        ttl = timedelta(seconds=settings.refresh_ttl_seconds)
        return token_out(tokens, await start_session(users.repository.session, user.id, user_agent, ttl))


class UserController(Controller):
    path = "/users"
    tags = ["accounts"]

    @get("/me", operation_id="getMe", summary="The caller's account")
    async def me(
        self, request: Request[CurrentUser, Any, Any], users: NamedDependency[UserService]
    ) -> UserOut:
        user = await users.get_one_or_none(id=request.user.id)
        if user is None:
            raise UserNotFoundError("This account no longer exists")
        return to_user_out(user)

    @get("/", operation_id="searchUsers", summary="Find people by name prefix or exact email")
    async def search(
        self,
        request: Request[CurrentUser, Any, Any],
        users: NamedDependency[UserService],
        # Litestar ignores msgspec's Meta on query parameters; its own QueryParameter enforces the bounds.
        search: Annotated[str, QueryParameter(min_length=1, max_length=320, pattern=NO_NUL)],
        limit: Annotated[int, QueryParameter(ge=1, le=50)] = 20,
    ) -> list[PersonOut]:
        """Matches the start of a name, or a whole email, ignoring case; the caller is left out.

        Shows each person's id and name only: no one learns another person's email.
        """
        found = await users.search(search, limit, exclude_id=request.user.id)
        return [PersonOut(id=user.id, name=user.name) for user in found]

    @delete(
        "/me",
        operation_id="deleteMe",
        summary="Delete the caller's account",
        responses=error_responses(WrongPasswordError, RateLimitedError),
    )
    async def delete_me(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[AccountDeleteIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        hasher: NamedDependency[PasswordHasher],
        attempts: NamedDependency[LoginAttempts],
    ) -> None:
        """204: every session ends and every socket closes; the account leaves its chats, its messages
        stay there with the sender shown as ``{"id": null, "name": "Deleted account"}``, and its email
        can be registered again. A wrong password: 403; it counts towards the account's login lock.
        """
        check = (hasher, attempts)
        await delete_account_with_password(db_session, events, check, request.user.id, data.password)


class _RateLimitWithRetryAfter(RateLimitMiddleware):
    """Litestar's limiter, plus the standard ``Retry-After`` header once the allowance is used up."""

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        if headers[self.config.rate_limit_remaining_header_key] == "0":
            headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers


def create_rate_limit(requests_per_minute: int) -> RateLimitConfig:
    """Per client address; kept in the app's store (per process unless a shared store is configured)."""
    return RateLimitConfig(
        rate_limit=("minute", requests_per_minute), middleware_class=_RateLimitWithRetryAfter
    )
