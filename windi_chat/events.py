"""Publishing events to the sockets of a chat, through Litestar's channels plugin.

Actions call the :class:`EventBus` only after their transaction has committed, so a client never hears
of a change the database does not hold.

Each event travels as ``<header>\\n<frame JSON>``. The socket forwards the frame bytes as they are and
reads only the short header to decide what to do: skip a message it already sent during catch-up
(``M<seq>``), skip its own typing event (``T<socket id>``), close when its user is removed
(``R<user id>``). The frame is encoded once per event, whatever the number of sockets.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec
from litestar.channels import ChannelsPlugin

from windi_chat.schemas import (
    MemberAddedFrame,
    MemberRemovedFrame,
    MessageFrame,
    MessageOut,
    ReadEventFrame,
    TypingEventFrame,
)

__all__ = ("EventBus", "chat_channel", "split_event")

KIND_MESSAGE = ord("M")
KIND_TYPING = ord("T")
KIND_REMOVED = ord("R")
KIND_OTHER = ord("-")

_encoder = msgspec.json.Encoder()


def chat_channel(chat_id: int) -> str:
    return f"chat:{chat_id}"


@lru_cache(maxsize=64)
def split_event(payload: bytes) -> tuple[int, bytes, str]:
    """``(kind, header argument, frame text)`` of a published event.

    Every socket of a chat is handed the same payload object, so caching parses it once per event
    rather than once per socket.
    """
    header, _, frame = payload.partition(b"\n")
    return header[0], header[1:], frame.decode()


class EventBus:
    """What actions publish; one method per kind of event."""

    def __init__(self, channels: ChannelsPlugin) -> None:
        self._channels = channels

    def _publish(self, chat_id: int, header: bytes, frame: msgspec.Struct) -> None:
        self._channels.publish(header + b"\n" + _encoder.encode(frame), chat_channel(chat_id))

    def message(self, message: MessageOut) -> None:
        self._publish(message.chat_id, b"M%d" % message.seq, MessageFrame(message=message))

    def read(self, chat_id: int, user_id: int, seq: int, all_read_seq: int) -> None:
        frame = ReadEventFrame(chat_id=chat_id, user_id=user_id, seq=seq, all_read_seq=all_read_seq)
        self._publish(chat_id, b"-", frame)

    def typing(self, chat_id: int, user_id: int, socket_id: str) -> None:
        self._publish(chat_id, b"T" + socket_id.encode(), TypingEventFrame(chat_id=chat_id, user_id=user_id))

    def member_added(self, chat_id: int, user_id: int) -> None:
        self._publish(chat_id, b"-", MemberAddedFrame(chat_id=chat_id, user_id=user_id))

    def member_removed(self, chat_id: int, user_id: int) -> None:
        self._publish(chat_id, b"R%d" % user_id, MemberRemovedFrame(chat_id=chat_id, user_id=user_id))
