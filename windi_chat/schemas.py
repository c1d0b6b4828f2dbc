"""Request and response bodies. msgspec validates them and they document themselves in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

__all__ = (
    "ChatOut",
    "GroupChatCreate",
    "HealthOut",
    "LoginForm",
    "MemberOut",
    "MessageOut",
    "PrivateChatCreate",
    "RegisterIn",
    "TokenOut",
    "UserOut",
)

# A name must hold at least one visible character.
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"\S", examples=["Ada Lovelace"])]
Email = Annotated[
    str, Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", examples=["ada@example.com"])
]
Password = Annotated[str, Meta(min_length=8, max_length=128, examples=["correct horse battery"])]
UserId = Annotated[int, Meta(ge=1)]


class RegisterIn(Struct, forbid_unknown_fields=True):
    name: Name
    email: Email
    password: Password


class UserOut(Struct):
    id: int
    name: str
    email: str


class LoginForm(Struct):
    """The OAuth2 password form: ``username`` holds the email."""

    username: str
    password: str


class TokenOut(Struct):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class HealthOut(Struct):
    status: Literal["ok", "unavailable"]


class PrivateChatCreate(Struct, tag="private", tag_field="type", forbid_unknown_fields=True):
    user_id: UserId


class GroupChatCreate(Struct, tag="group", tag_field="type", forbid_unknown_fields=True):
    name: Name
    member_ids: Annotated[list[UserId], Meta(max_length=1000)] = msgspec.field(default_factory=list)


class MessageOut(Struct):
    id: int
    chat_id: int
    seq: int
    sender_id: int
    text: str
    timestamp: datetime
    client_id: str
    read: bool


class MemberOut(Struct):
    user_id: int
    name: str
    role: Literal["owner", "member"]
    joined_at: datetime


class ChatOut(Struct):
    id: int
    type: Literal["private", "group"]
    name: str | None
    created_at: datetime
    creator_id: int | None
    members: list[MemberOut]
    last_message: MessageOut | None
    unread_count: int


class MemberAddedFrame(Struct, tag="member_added", tag_field="type"):
    chat_id: int
    user_id: int


class MemberRemovedFrame(Struct, tag="member_removed", tag_field="type"):
    chat_id: int
    user_id: int
