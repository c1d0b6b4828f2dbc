"""Publishing events to the sockets of a chat, through Litestar's channels plugin.

Actions call the :class:`EventBus` only after their transaction has committed, so a client never hears
of a change the database does not hold.

Each event travels as ``<header>\\n<frame JSON>``. The socket forwards the frame bytes as they are and
reads only the short header to decide what to do: skip a message it already sent during catch-up
(``M<seq>``), skip its own typing event (``T<socket id>``), close when its user is removed
(``R<user id>``). The frame is encoded once per event, whatever the number of sockets.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable

import anyio
import msgspec
from litestar.channels import ChannelsBackend, ChannelsPlugin

from windi_chat.schemas import (
    MemberAddedFrame,
    MemberRemovedFrame,
    MessageFrame,
    MessageOut,
    ReadEventFrame,
    TypingEventFrame,
)

__all__ = ("EventBus", "GuardedBackend", "chat_channel", "split_event")

logger = logging.getLogger("windi_chat.events")

KIND_MESSAGE = ord("M")
KIND_TYPING = ord("T")
KIND_REMOVED = ord("R")
KIND_OTHER = ord("-")

_encoder = msgspec.json.Encoder()


def chat_channel(chat_id: int) -> str:
    return f"chat:{chat_id}"


def split_event(payload: bytes) -> tuple[int, bytes, bytes]:
    """``(kind, header argument, frame bytes)`` of a published event."""
    header, _, frame = payload.partition(b"\n")
    return header[0], header[1:], frame


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


class GuardedBackend(ChannelsBackend):
    """A channels backend that survives its own failures.

    Litestar's publish worker ends at the first exception a backend raises, after which every later
    event queues up silently; its subscriber worker likewise ends when the event stream breaks. Here a
    failed publish is logged and reported (the event is lost for live delivery only: the database has
    it), and a broken stream is reported and reopened with backoff. ``on_lost`` receives the channels
    whose sockets may have missed events, or ``None`` for all of them, so they can be told to catch up.
    """

    def __init__(self, backend: ChannelsBackend, on_lost: Callable[[Iterable[str] | None], None]) -> None:
        self._backend = backend
        self._on_lost = on_lost

    async def on_startup(self) -> None:
        await self._backend.on_startup()

    async def on_shutdown(self) -> None:
        await self._backend.on_shutdown()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        try:
            await self._backend.publish(data, channels)
        except Exception:
            logger.exception("Publishing an event failed; its sockets will be asked to catch up")
            self._on_lost(list(channels))

    async def subscribe(self, channels: Iterable[str]) -> None:
        await self._backend.subscribe(channels)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await self._backend.unsubscribe(channels)

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        delay = 0.1
        while True:
            try:
                async for event in self._backend.stream_events():
                    delay = 0.1
                    yield event
                return
            except Exception:
                logger.exception("The event stream broke; reopening it in %.1fs", delay)
                self._on_lost(None)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        return await self._backend.get_history(channel, limit)
