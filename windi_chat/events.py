"""Publishing events to the sockets of a chat, through Litestar's channels plugin.

Actions call :meth:`EventBus.publish` only after their transaction has committed, so a client never
hears of a change the database does not hold.
"""

from __future__ import annotations

import logging

import msgspec
from litestar.channels import ChannelsPlugin

__all__ = ("EventBus", "chat_channel")

logger = logging.getLogger("windi_chat.events")

_encoder = msgspec.json.Encoder()


def chat_channel(chat_id: int) -> str:
    return f"chat:{chat_id}"


class EventBus:
    """Encodes an event once and hands it to the channels backend for every socket of the chat."""

    def __init__(self, channels: ChannelsPlugin) -> None:
        self._channels = channels

    def publish(self, chat_id: int, event: msgspec.Struct) -> None:
        self._channels.publish(_encoder.encode(event), chat_channel(chat_id))
