"""The tables. One schema serves PostgreSQL and SQLite.

A person's logins are sessions: each holds its refresh tokens, and access tokens name it (``sid``).
A chat is either private (exactly two members, one chat per pair) or a group. Membership rows carry
each member's role and read marker; messages are numbered per chat by ``seq``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from advanced_alchemy.base import DefaultBase, IdentityBase, orm_registry
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

__all__ = (
    "Chat",
    "ChatMember",
    "ChatType",
    "LoginSession",
    "MemberRole",
    "Message",
    "Reaction",
    "RefreshToken",
    "User",
    "metadata",
    "utcnow",
)

metadata = orm_registry.metadata


class ChatType(StrEnum):
    PRIVATE = "private"
    GROUP = "group"


class MemberRole(StrEnum):
    OWNER = "owner"
    MEMBER = "member"


def _stored_as_text(enum: type[StrEnum]) -> Enum:
    """The enum's values in a plain ``VARCHAR(10)``, as the schema has always stored them."""
    return Enum(enum, native_enum=False, length=10, values_callable=lambda kind: [m.value for m in kind])


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(IdentityBase):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(100))
    # Stored lower-cased, so the unique index makes the address unique case-insensitively.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # When the person was last known online (see ``presence``); null if never.
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    __table_args__ = (Index("ix_users_name", "name"),)


class Chat(IdentityBase):
    __tablename__ = "chats"

    type: Mapped[ChatType] = mapped_column(_stored_as_text(ChatType))
    name: Mapped[str | None] = mapped_column(String(100), default=None)
    creator_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # The highest seq handed out; bumping it in the send transaction makes seqs gap-free.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The highest rev handed out: every change in the chat (a new message, an edit, a delete, a reaction
    # added or taken back) takes the next one, so a client catches up on changes as on messages.
    last_rev: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Inbox order: the last message's time, or the creation time of a chat with no message yet.
    last_activity_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # "<low user id>:<high user id>" for a private chat, so the database allows one chat per pair.
    private_key: Mapped[str | None] = mapped_column(String(41), unique=True, default=None)


class ChatMember(DefaultBase):
    __tablename__ = "chat_members"

    chat_id: Mapped[int] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[MemberRole] = mapped_column(_stored_as_text(MemberRole), default=MemberRole.MEMBER)
    joined_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # "I have read everything up to this seq"; only ever moves forward.
    read_seq: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_chat_members_user_id", "user_id"),)


class Message(IdentityBase):
    __tablename__ = "messages"

    chat_id: Mapped[int] = mapped_column(ForeignKey("chats.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    # Null once the sender's account is deleted: the message stays for the other members.
    sender_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    client_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    # The chat's rev of this message's latest change.
    rev: Mapped[int] = mapped_column(BigInteger)
    # The seq of the message this one answers, in the same chat.
    reply_to: Mapped[int | None] = mapped_column(BigInteger, default=None)
    edited_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # A deleted message keeps its place (seq) with its text gone: a tombstone.
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        # The change feed reads by (chat_id, rev); each rev names one change, so one message.
        UniqueConstraint("chat_id", "rev", name="uq_messages_chat_rev"),
        # History and catch-up read by (chat_id, seq); this unique index serves them.
        UniqueConstraint("chat_id", "seq", name="uq_messages_chat_seq"),
        # Idempotent sends: one row per (chat, sender, client id), whatever the retries.
        UniqueConstraint("chat_id", "sender_id", "client_id", name="uq_messages_chat_sender_client"),
    )


class Reaction(DefaultBase):
    """One person's emoji on one message, keyed by the message's place (chat, seq) like every write."""

    __tablename__ = "message_reactions"

    chat_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    emoji: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The chat's rev when it was added: emoji are listed in order of first use.
    rev: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint("chat_id", "seq", "emoji", "user_id", name="pk_message_reactions"),
        ForeignKeyConstraint(
            ["chat_id", "seq"],
            ["messages.chat_id", "messages.seq"],
            name="fk_message_reactions_message",
            ondelete="CASCADE",
        ),
        Index("ix_message_reactions_user_id", "user_id"),
    )


class LoginSession(DefaultBase):
    """One login of one person on one device, until it is revoked or its refresh token expires."""

    __tablename__ = "sessions"

    # Random, not a counter: ids are never reused, so a process's memory of revoked ids stays right.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    # Moves forward with each refresh: a session lives as long as its newest refresh token.
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)


class RefreshToken(DefaultBase):
    """A refresh token of a session, stored only as its SHA-256.

    Spent tokens are kept (``spent_at``) for as long as their session lives: presenting one again means
    it was copied, and the whole session is revoked.
    """

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    spent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)
