"""What a gateway keeps per chat, and how it tells which chat an event is for.

Events travel as ``<header>\n<frame>`` on each chat's channel; a gateway hears many channels on one
subscriber, which hands it the payload without the channel's name. The frame names its chat (and, for
a message, its seq and sender; for a read marker, whose): :func:`route` reads those few fields once per
event, whatever the number of gateways, and skips the rest of the frame unread.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import msgspec

from windi_chat.events import KIND_ADDED, split_event

__all__ = ("NO_CHAT", "ChatState", "Route", "route")

logger = logging.getLogger("windi_chat.realtime")

NO_CHAT = 0  # the "chat" of a frame that is for none (``auth``), or of an event that routes nowhere


class ChatState:
    """What a gateway knows of one chat: the last seq it sent, its person's read marker, and, for a chat
    the device synced by rev, the rev up to which changes were replayed (their live copies are dropped).
    """

    __slots__ = ("read_seq", "sent_rev", "sent_seq")

    def __init__(self, sent_seq: int, read_seq: int, sent_rev: int | None = None) -> None:
        self.sent_seq = sent_seq
        self.read_seq = read_seq
        self.sent_rev = sent_rev

    def unread(self, seq: int) -> int:
        return max(0, seq - self.read_seq)


class MessageRoute(msgspec.Struct):
    chat_id: int
    seq: int
    rev: int = 0
    sender_id: int | None = None


class Route(msgspec.Struct):
    """The few fields of an event's frame a gateway needs to route it; the rest is skipped unread."""

    type: str = ""
    chat_id: int | None = None
    user_id: int | None = None
    seq: int | None = None
    message: MessageRoute | None = None


_route_decoder = msgspec.json.Decoder(Route)


@lru_cache(maxsize=1024)
def route(payload: bytes) -> tuple[int, bytes, str, Route]:
    """An event's header and frame and its routing fields, read once per event for every gateway.

    Every gateway of a chat is handed the same payload object; many events may be in flight at once
    across gateways, hence a larger cache than ``split_event``'s. A frame that does not fit routes
    nowhere.
    """
    kind, argument, frame = split_event(payload)
    try:
        fields = Route() if kind == KIND_ADDED else _route_decoder.decode(frame)
    except msgspec.ValidationError:
        logger.warning("An event of kind %r could not be routed to gateways", chr(kind))
        fields = Route()
    if fields.chat_id is None and fields.message is not None:
        fields.chat_id = fields.message.chat_id
    return kind, argument, frame, fields
