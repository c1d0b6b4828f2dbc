"""How errors become HTTP responses, and how the OpenAPI document describes them.

Every error body has Litestar's shape, ``{"status_code": ..., "detail": ...}``, whoever raised it.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import defaultdict
from typing import Any

import asyncpg
import msgspec
from advanced_alchemy.exceptions import NotFoundError as RowNotFoundError
from advanced_alchemy.exceptions import RepositoryError
from litestar import Request, Response
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.types import ExceptionHandlersMap, Scope
from litestar.types.protocols import Logger
from sqlalchemy.exc import SQLAlchemyError

from windi_chat.database import is_unavailable, unavailable_cause
from windi_chat.errors import (
    ConflictError,
    DatabaseUnavailableError,
    DomainError,
    InvalidError,
    NotAllowedError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    answer_for,
)
from windi_chat.inputs import MAX_JSON_DEPTH, json_too_deep

__all__ = (
    "DATABASE_ERRORS",
    "RETRY_AFTER_SECONDS",
    "ErrorOut",
    "JSONDepthRequest",
    "error_responses",
    "exception_handlers",
    "log_unhandled",
)

logger = logging.getLogger("windi_chat.app")

# What a 503 asks the client to wait: a PostgreSQL restart or failover takes a second or a few.
RETRY_AFTER_SECONDS = 3

STATUS_OF_KIND: dict[type[DomainError], int] = {
    InvalidError: 400,
    UnauthenticatedError: 401,
    NotAllowedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    RateLimitedError: 429,
    UnavailableError: 503,
}


class ErrorOut(msgspec.Struct, omit_defaults=True):
    """Litestar's error body; ``extra`` carries the field errors of a request that failed validation."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


def status_of(error: type[DomainError]) -> int:
    return answer_for(error, STATUS_OF_KIND, 400)


def _answer(error: DomainError) -> Response[ErrorOut]:
    status = status_of(type(error))
    headers = None
    if isinstance(error, UnavailableError):
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    elif isinstance(error, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    return Response(ErrorOut(status_code=status, detail=error.detail), status_code=status, headers=headers)


def domain_error(_request: Request[Any, Any, Any], exc: DomainError) -> Response[ErrorOut]:
    return _answer(exc)


def database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorOut]:
    """A database that cannot be reached is a 503 the client may retry; anything else is our bug."""
    if isinstance(exc, RowNotFoundError):
        return _answer(NotFoundError())
    if is_unavailable(exc):
        logger.warning(
            "Database unavailable (%s %s): %s", request.method, request.url.path, unavailable_cause(exc)
        )
        return _answer(DatabaseUnavailableError())
    logger.exception("Database error")
    return Response(ErrorOut(status_code=500, detail="Internal server error"), status_code=500)


def invalid_request(_request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorOut]:
    """Litestar's 400, except that a path naming nothing that could exist (an id past 64 bits, a
    malformed session id) is a 404, like a row that does not exist.
    """
    problems = exc.extra if isinstance(exc.extra, list) else []
    in_path = [isinstance(problem, dict) and problem.get("source") == "path" for problem in problems]
    if problems and all(in_path):
        return _answer(NotFoundError())
    body = ErrorOut(status_code=exc.status_code, detail=exc.detail, extra=exc.extra)
    return Response(body, status_code=exc.status_code)


class JSONDepthRequest(Request[Any, Any, Any]):
    """A request whose JSON body is refused (400) when it nests deeper than ``MAX_JSON_DEPTH``.

    Checked before decoding: msgspec decodes nesting up to the recursion limit, then raises
    ``RecursionError``, which would be a 500.
    """

    async def json(self) -> Any:
        if json_too_deep(await self.body()):
            raise ClientException(f"JSON must not nest deeper than {MAX_JSON_DEPTH} levels")
        return await super().json()


# asyncpg's own errors as well: a few (a refused connection, say) can escape SQLAlchemy unwrapped.
DATABASE_ERRORS = (RepositoryError, SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

exception_handlers: ExceptionHandlersMap = {
    DomainError: domain_error,
    ValidationException: invalid_request,
    **dict.fromkeys(DATABASE_ERRORS, database_error),
}


def log_unhandled(log: Logger, scope: Scope, formatted: list[str]) -> None:
    """Log an exception that became a 500, except database errors: ``database_error`` logs those."""
    if isinstance(sys.exc_info()[1], (DomainError, *DATABASE_ERRORS)):
        return
    log.error("Uncaught exception (%s %s):\n%s", scope["type"], scope["path"], "".join(formatted))


def error_responses(*errors: type[DomainError]) -> dict[int, ResponseSpec]:
    """The OpenAPI responses of a route that may raise ``errors``, one per status."""
    by_status: dict[int, list[type[DomainError]]] = defaultdict(list)
    for error in errors:
        by_status[status_of(error)].append(error)
    return {
        status: ResponseSpec(
            ErrorOut,
            generate_examples=False,
            description="; ".join(error.default_detail for error in group),
            examples=[
                Example(summary=error.__name__, value={"status_code": status, "detail": error.default_detail})
                for error in group
            ],
        )
        for status, group in by_status.items()
    }
