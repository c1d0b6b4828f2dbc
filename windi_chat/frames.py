"""The WebSocket's frames, both ways. msgspec decodes and validates the client's; the AsyncAPI document
(``/docs/asyncapi.json``) is built from the unions at the end.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from windi_chat.inputs import Id, Seq
from windi_chat.schemas import ChatOut, ClientId, Emoji, MessageOut, MessageText

__all__ = (
    "MAX_FRAME_BYTES",
    "AckFrame",
    "AuthFrame",
    "AuthOkFrame",
    "ChatAddedFrame",
    "ChatRemovedFrame",
    "ClientFrame",
    "DeleteFrame",
    "EditFrame",
    "ErrorFrame",
    "GatewayFrame",
    "MemberAddedFrame",
    "MemberRemovedFrame",
    "MessageChangeFrame",
    "MessageFrame",
    "MessageUpdatedFrame",
    "PresenceFrame",
    "ReactFrame",
    "ReadEventFrame",
    "ReadFrame",
    "ResyncFrame",
    "SendFrame",
    "ServerFrame",
    "SyncFrame",
    "SyncedFrame",
    "TypingEventFrame",
    "TypingFrame",
)

# WebSocket frames: client to server -----------------------------------------------------------------

# The largest client frame, in bytes: uvicorn refuses bigger ones and the socket checks again.
MAX_FRAME_BYTES = 65_536

# On the gateway (``/ws``) a frame names the chat it is for; on ``/ws/{chat_id}`` it may leave it out.


class SendFrame(Struct, tag="send", tag_field="type", forbid_unknown_fields=True):
    client_id: ClientId
    text: MessageText
    reply_to: Seq | None = None
    chat_id: Id | None = None


class ReadFrame(Struct, tag="read", tag_field="type", forbid_unknown_fields=True):
    seq: Seq
    chat_id: Id | None = None


class TypingFrame(Struct, tag="typing", tag_field="type", forbid_unknown_fields=True):
    chat_id: Id | None = None


class AuthFrame(Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    """A newer access token of the same person, so the socket outlives the token it was opened with."""

    token: Annotated[str, Meta(min_length=1, max_length=4096)]


class SyncFrame(Struct, tag="sync", tag_field="type", forbid_unknown_fields=True):
    """The gateway's first frame: per chat, the seq after which the device wants the new messages it
    missed (``chats``), or the rev after which it wants every change (``revs``, which wins)."""

    chats: dict[Id, Seq] = {}
    revs: dict[Id, Seq] = {}


class EditFrame(Struct, tag="edit", tag_field="type", forbid_unknown_fields=True):
    """New text for one of the sender's own messages; ``client_id``, if given, comes back in the answer."""

    seq: Seq
    text: MessageText
    client_id: ClientId | None = None
    chat_id: Id | None = None


class DeleteFrame(Struct, tag="delete", tag_field="type", forbid_unknown_fields=True):
    seq: Seq
    client_id: ClientId | None = None
    chat_id: Id | None = None


class ReactFrame(Struct, tag="react", tag_field="type", forbid_unknown_fields=True):
    """Add (``on``) or take back the caller's ``emoji`` on a message."""

    seq: Seq
    emoji: Emoji
    on: bool
    client_id: ClientId | None = None
    chat_id: Id | None = None


# The frames that change a stored message; each is answered with an ``ack`` that carries it.
MessageChangeFrame = EditFrame | DeleteFrame | ReactFrame
ClientFrame = SendFrame | ReadFrame | TypingFrame | AuthFrame | EditFrame | DeleteFrame | ReactFrame
# The gateway's frames: the chat socket's, each naming its chat, and the opening ``sync``.
GatewayFrame = ClientFrame | SyncFrame


# WebSocket frames: server to client -----------------------------------------------------------------


class MessageFrame(Struct, tag="message", tag_field="type", omit_defaults=True):
    """On the gateway, ``unread_count`` is the receiving person's unread messages in the chat."""

    message: MessageOut
    unread_count: int | None = None


class AckFrame(Struct, tag="ack", tag_field="type", omit_defaults=True, kw_only=True):
    """A send, edit, delete or reaction is stored: the message as it now is. ``client_id`` is the
    frame's own, absent when it had none."""

    client_id: str | None = None
    message: MessageOut
    chat_id: int | None = None  # on the gateway


class MessageUpdatedFrame(Struct, tag="message_updated", tag_field="type"):
    """A message was edited, deleted, or its reactions changed: its whole current state."""

    message: MessageOut


class ReadEventFrame(Struct, tag="read", tag_field="type"):
    chat_id: int
    user_id: int
    seq: int
    all_read_seq: int


class TypingEventFrame(Struct, tag="typing", tag_field="type"):
    chat_id: int
    user_id: int


class ResyncFrame(Struct, tag="resync", tag_field="type", omit_defaults=True):
    """Too much to replay: the client pages ``/history`` (by seq) or ``/chats/{id}/changes`` (by rev).

    A socket opened with ``after_seq`` gets ``after_seq`` and ``last_seq``; one opened with ``after_rev``
    gets ``after_rev`` and ``last_rev``.
    """

    after_seq: int | None = None
    last_seq: int | None = None
    after_rev: int | None = None
    last_rev: int | None = None
    chat_id: int | None = None  # on the gateway


class MemberAddedFrame(Struct, tag="member_added", tag_field="type"):
    chat_id: int
    user_id: int


class MemberRemovedFrame(Struct, tag="member_removed", tag_field="type"):
    chat_id: int
    user_id: int


class PresenceFrame(Struct, tag="presence", tag_field="type"):
    """Someone who shares a chat with the receiver came online or went offline (gateways only).

    ``last_seen`` is when they were last known online: the start of this stretch online, or when their
    last gateway closed; null if never.
    """

    user_id: int
    online: bool
    last_seen: datetime | None


class AuthOkFrame(Struct, tag="auth_ok", tag_field="type"):
    """The socket now lives until the new token's expiry."""

    expires_at: datetime


class ErrorFrame(Struct, tag="error", tag_field="type", omit_defaults=True):
    code: str
    detail: str
    client_id: str | None = None
    chat_id: int | None = None  # on the gateway, the chat of the frame it answers


class ChatAddedFrame(Struct, tag="chat_added", tag_field="type"):
    """On the gateway: the person is in a new chat (its inbox entry, as ``GET /chats`` lists it)."""

    chat: ChatOut


class SyncedFrame(Struct, tag="synced", tag_field="type"):
    """On the gateway: the ``sync`` is served (replays, ``chat_added``, ``chat_removed``); live events
    follow."""


class ChatRemovedFrame(Struct, tag="chat_removed", tag_field="type"):
    """On the gateway: the person left or was removed; nothing more of the chat follows."""

    chat_id: int


# Every frame the server sends: the AsyncAPI document (``/docs/asyncapi.json``) is built from this union.
ServerFrame = (
    MessageFrame
    | MessageUpdatedFrame
    | AckFrame
    | ReadEventFrame
    | TypingEventFrame
    | MemberAddedFrame
    | MemberRemovedFrame
    | PresenceFrame
    | ResyncFrame
    | AuthOkFrame
    | ErrorFrame
    | ChatAddedFrame
    | ChatRemovedFrame
    | SyncedFrame
)
