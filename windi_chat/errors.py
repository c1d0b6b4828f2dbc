"""What can go wrong in an action, in the product's words and nothing of the transport.

Actions raise these; ``http_errors`` turns them into responses and ``realtime`` into error frames and
close codes, each in one place, so a new error is right on both transports without new code there.
The seven kinds below are the whole vocabulary: a new error subclasses one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, TypeVar

__all__ = (
    "AlreadyMemberError",
    "ChatNotFoundError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DomainError",
    "EmailTakenError",
    "GroupFullError",
    "InvalidError",
    "InvalidMessageError",
    "InvalidReactionError",
    "InvalidRefreshTokenError",
    "InvalidSearchError",
    "MessageDeletedError",
    "MessageNotFoundError",
    "NotAMemberError",
    "NotAllowedError",
    "NotFoundError",
    "NotYourMessageError",
    "RateLimitedError",
    "SearchBusyError",
    "SessionNotFoundError",
    "TooManyReactionsError",
    "UnauthenticatedError",
    "UnavailableError",
    "UserNotFoundError",
    "WrongPasswordError",
    "answer_for",
)


T = TypeVar("T")


class DomainError(Exception):
    """A rule of the product said no; ``detail`` is safe to show the client."""

    default_detail: ClassVar[str] = "The request cannot be carried out"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


# The kinds ------------------------------------------------------------------------------------------


class NotFoundError(DomainError):
    default_detail = "Not found"


class InvalidError(DomainError):
    default_detail = "Invalid request"


class NotAllowedError(DomainError):
    default_detail = "Not allowed"


class UnauthenticatedError(DomainError):
    """The caller's credentials prove nothing (any more): log in again."""

    default_detail = "Not authenticated"


class ConflictError(DomainError):
    default_detail = "Conflicts with the current state"


class UnavailableError(DomainError):
    """Something we depend on cannot be reached: the same request may succeed later."""

    default_detail = "Temporarily unavailable; try again"


class RateLimitedError(DomainError):
    """Too much, too fast from one person: the same request passes after ``retry_after`` seconds.

    ``exhausted``: the person kept going after being refused, and a socket of theirs is closed.
    """

    default_detail = "Too many messages; slow down"

    def __init__(self, retry_after: float, exhausted: bool = False, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.exhausted = exhausted


# The errors -----------------------------------------------------------------------------------------


class ChatNotFoundError(NotFoundError):
    """The chat does not exist or the caller is not in it: one answer, so chat ids cannot be probed."""

    default_detail = "Chat not found"


class UserNotFoundError(NotFoundError):
    default_detail = "User not found"


class InvalidMessageError(InvalidError):
    """The message breaks a rule the schema alone cannot state (the length after trimming)."""

    default_detail = "Invalid message"


class MessageNotFoundError(NotFoundError):
    """No message of this chat has that seq (the chat itself is one the caller is in)."""

    default_detail = "Message not found"


class InvalidReactionError(InvalidError):
    default_detail = "An emoji is 1 to 32 bytes of UTF-8 with no whitespace or control characters"


class NotYourMessageError(NotAllowedError):
    """Only a message's sender edits it; its sender or the group's owner deletes it."""

    default_detail = "Not your message"


class MessageDeletedError(ConflictError):
    default_detail = "The message was deleted"


class TooManyReactionsError(ConflictError):
    default_detail = "The message has as many different reactions as it may hold"


class SearchBusyError(UnavailableError):
    """Every search slot of the process stayed taken, or the search ran past its time."""

    default_detail = "Search is busy or this search took too long; try again, or narrow it"


class InvalidSearchError(InvalidError):
    """The search query is empty, too long or holds characters no message can."""

    default_detail = "Invalid search query"


class SessionNotFoundError(NotFoundError):
    """Not one of the caller's live sessions: another person's looks the same as none at all."""

    default_detail = "Session not found"


class InvalidRefreshTokenError(UnauthenticatedError):
    """Unknown, expired, already used or of a revoked session: one answer, so nothing can be probed."""

    default_detail = "Invalid or expired refresh token"


class WrongPasswordError(NotAllowedError):
    default_detail = "The current password is wrong"


class EmailTakenError(ConflictError):
    default_detail = "An account with this email already exists"


class AlreadyMemberError(ConflictError):
    default_detail = "Already a member of this group"


class GroupFullError(ConflictError):
    default_detail = "group is full"


class NotAMemberError(ConflictError):
    default_detail = "Not a member of this group"


class DatabaseUnavailableError(UnavailableError):
    default_detail = "The database is unavailable; try again"


def answer_for(error: type[DomainError], answers: Mapping[type[DomainError], T], default: T) -> T:
    """A transport's answer for an error: the one for its own class, else for its nearest kind."""
    return next((answers[kind] for kind in error.__mro__ if kind in answers), default)
