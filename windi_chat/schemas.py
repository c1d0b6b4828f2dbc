"""Request and response bodies. msgspec validates them and they document themselves in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from windi_chat.inputs import (
    EMOJI_PATTERN,
    MAX_EMOJI_BYTES,
    NAME_PATTERN,
    NO_CONTROL,
    TEXT_PATTERN,
    Id,
    Seq,
    has_visible,
)
from windi_chat.models import ChatType, MemberRole

__all__ = (
    "AccountDeleteIn",
    "ChatOut",
    "DeletedSenderOut",
    "EditMessageIn",
    "Emoji",
    "GroupChatCreate",
    "HealthOut",
    "LoginForm",
    "MemberOut",
    "MessageOut",
    "PasswordChangeIn",
    "PersonOut",
    "PrivateChatCreate",
    "ReadIn",
    "ReadOut",
    "RefreshIn",
    "RegisterIn",
    "SendMessageIn",
    "SessionOut",
    "TokenOut",
    "UserOut",
)

# Strings that reach a query refuse control characters here (PostgreSQL text cannot hold NUL), as a 400.
NO_NUL = NO_CONTROL
# No control or bidi characters; a visible one is checked once decoded (``_check_name``).
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=NAME_PATTERN, examples=["Ada Lovelace"])]
EMAIL_MAX_LENGTH = 320
_EMAIL_PART = r"[^@\s\x00-\x1f\x7f-\x9f]+"
EMAIL_PATTERN = rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$"
Email = Annotated[str, Meta(max_length=EMAIL_MAX_LENGTH, pattern=EMAIL_PATTERN, examples=["ada@example.com"])]
# At least 8 characters that are not whitespace: eight spaces are no password.
Password = Annotated[
    str,
    Meta(min_length=8, max_length=128, pattern=r"^(?:\s*\S){8}", examples=["correct horse battery"]),
]
UserId = Id


def _check_name(name: str) -> None:
    """A name of blanks, zero-width characters or a BOM would show as nobody (raised as a 400)."""
    if not has_visible(name):
        raise ValueError("name must hold a visible character")


class RegisterIn(Struct, forbid_unknown_fields=True):
    name: Name
    email: Email
    password: Password

    def __post_init__(self) -> None:
        _check_name(self.name)


class UserOut(Struct):
    """The caller's own account: only its owner sees its email."""

    id: int
    name: str
    email: str


class PersonOut(Struct):
    """Someone else: their id and name, never their email."""

    id: int
    name: str


class LoginForm(Struct):
    """The OAuth2 password form: ``username`` holds the email."""

    username: Annotated[str, Meta(max_length=320, pattern=NO_CONTROL)]
    password: Annotated[str, Meta(max_length=1024)]


class TokenOut(Struct):
    """An access token (``expires_in`` seconds) and the refresh token that gets the next one."""

    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str


RefreshTokenText = Annotated[str, Meta(min_length=1, max_length=256)]


class RefreshIn(Struct, forbid_unknown_fields=True):
    refresh_token: RefreshTokenText


class PasswordChangeIn(Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, Meta(max_length=128)]
    new_password: Password


class SessionOut(Struct):
    """One login of the caller; ``current`` marks the one the request was made with."""

    id: str
    created_at: datetime
    last_used_at: datetime
    user_agent: str
    current: bool


class HealthOut(Struct):
    # degraded: the database answers, live delivery is down and sockets are served by polling it
    status: Literal["ok", "degraded", "unavailable"]


class PrivateChatCreate(Struct, tag="private", tag_field="type", forbid_unknown_fields=True):
    user_id: UserId


class GroupChatCreate(Struct, tag="group", tag_field="type", forbid_unknown_fields=True):
    name: Name
    member_ids: Annotated[list[UserId], Meta(max_length=1000)] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        _check_name(self.name)


class DeletedSenderOut(Struct):
    """Who sent a message whose sender has deleted their account."""

    id: None = None
    name: Literal["Deleted account"] = "Deleted account"


class ReactionOut(Struct):
    emoji: str
    user_ids: list[int]


class MessageOut(Struct, omit_defaults=True):
    """``sender_id`` is null, and ``sender`` is present, when the sender's account was deleted.

    ``rev`` is the chat's rev of the message's latest change: a copy whose rev is not newer than one
    already held is stale. A deleted message keeps its seq and ``reply_to``, with ``text`` empty.
    """

    id: int
    chat_id: int
    seq: int
    sender_id: int | None
    text: str
    timestamp: datetime
    client_id: str
    read: bool
    rev: int
    reply_to: int | None
    edited_at: datetime | None
    deleted: bool
    # Emoji in order of first use, each with the people who chose it.
    reactions: list[ReactionOut]
    sender: DeletedSenderOut | None = None


class MemberOut(Struct):
    user_id: int
    name: str
    role: MemberRole
    joined_at: datetime
    # Whether a gateway of theirs is open (or closed within the grace), and when they were last known
    # online (null if never): see ``presence``.
    online: bool = False
    last_seen: datetime | None = None


class ChatOut(Struct):
    id: int
    type: ChatType
    name: str | None
    created_at: datetime
    creator_id: int | None
    # In the inbox, a group lists only its first members (by joining order); ``member_count`` counts all.
    members: list[MemberOut]
    member_count: int
    last_message: MessageOut | None
    unread_count: int


# Messages over REST ----------------------------------------------------------------------------------

ClientId = Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_CONTROL, examples=["3f1c9a52-msg-1"])]
MAX_TEXT_LENGTH = 4096
# Trimmed and checked for a visible character by ``messaging.clean_text``, for REST and socket alike.
MessageText = Annotated[str, Meta(max_length=4 * MAX_TEXT_LENGTH, pattern=TEXT_PATTERN)]


class SendMessageIn(Struct, forbid_unknown_fields=True):
    """``text`` is trimmed, then must hold 1..4096 characters."""

    text: MessageText
    client_id: ClientId
    # The seq of a message of this chat that this one answers.
    reply_to: Seq | None = None


class EditMessageIn(Struct, forbid_unknown_fields=True):
    """The new text, under the rules of sending: trimmed, then 1..4096 characters."""

    text: MessageText


# At most 32 bytes of UTF-8 (``message_changes.clean_emoji`` counts them), so at most 32 characters.
Emoji = Annotated[
    str, Meta(min_length=1, max_length=MAX_EMOJI_BYTES, pattern=EMOJI_PATTERN, examples=["\U0001f44d"])
]


class AccountDeleteIn(Struct, forbid_unknown_fields=True):
    password: Annotated[str, Meta(max_length=128)]


class ReadIn(Struct, forbid_unknown_fields=True):
    seq: Seq


class ReadOut(Struct):
    seq: int
    all_read_seq: int
