"""Domain errors: one vocabulary, answered the same way by every route and every socket."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from windi_chat import errors
from windi_chat.errors import (
    ConflictError,
    DomainError,
    InvalidError,
    NotAllowedError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
)
from windi_chat.http_errors import error_responses, exception_handlers
from windi_chat.protocol import FRAME_ERROR_CODES

KINDS = (
    InvalidError,
    UnauthenticatedError,
    NotAllowedError,
    NotFoundError,
    ConflictError,
    UnavailableError,
    RateLimitedError,
)
ALL_ERRORS = [
    value
    for value in (getattr(errors, name) for name in errors.__all__)
    if isinstance(value, type) and value is not DomainError
]


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda error: error.__name__)
def test_every_error_is_one_of_the_kinds(error: type[DomainError]) -> None:
    assert issubclass(error, KINDS)
    assert error.default_detail


@pytest.mark.parametrize("error", ALL_ERRORS, ids=lambda error: error.__name__)
def test_every_error_has_its_own_frame_answer(error: type[DomainError]) -> None:
    assert any(issubclass(error, kind) for kind in FRAME_ERROR_CODES)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidMessageError("text too long"), 400),
        (errors.InvalidRefreshTokenError(), 401),
        (errors.WrongPasswordError(), 403),
        (errors.SessionNotFoundError(), 404),
        (errors.NotAllowedError("only the owner"), 403),
        (errors.ChatNotFoundError(), 404),
        (errors.UserNotFoundError(), 404),
        (errors.EmailTakenError(), 409),
        (errors.AlreadyMemberError(), 409),
        (errors.DatabaseUnavailableError(), 503),
        (errors.RateLimitedError(2.5), 429),
        (errors.GroupFullError(), 409),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, DomainError) else str(value),
)
def test_a_domain_error_answers_http_with_its_kinds_status_and_detail(
    error: DomainError, status: int
) -> None:
    @get("/fail", responses=error_responses(type(error)))
    async def fail() -> None:
        raise error

    with TestClient(Litestar([fail], exception_handlers=exception_handlers)) as client:
        response = client.get("/fail")
        schema: dict[str, Any] = client.get("/schema/openapi.json").json()

    assert response.status_code == status
    assert response.json() == {"status_code": status, "detail": error.detail}
    documented = schema["paths"]["/fail"]["get"]["responses"][str(status)]
    assert error.default_detail in documented["description"]


def test_a_rate_limited_request_is_told_when_to_retry_in_whole_seconds() -> None:
    @get("/fail")
    async def fail() -> None:
        raise errors.RateLimitedError(2.1)

    with TestClient(Litestar([fail], exception_handlers=exception_handlers)) as client:
        response = client.get("/fail")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_an_error_without_detail_says_its_default() -> None:
    assert errors.ChatNotFoundError().detail == "Chat not found"
    assert errors.ChatNotFoundError("gone").detail == "gone"
