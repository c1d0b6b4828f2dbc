"""Presence driven as the gateway drives it, and heard as a gateway hears it, for tests.

:class:`Gateways` calls ``Presence.opened``/``closed`` on the app's own event loop; :class:`ChatEvents`
reads a chat's channel through the app's channels plugin, header and frame, as a gateway would.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from litestar.testing import TestClient

from tests.api import Account, Api
from windi_chat.events import chat_channel, split_event
from windi_chat.presence import Presence

__all__ = ("ChatEvents", "Gateways", "member")


class Gateways:
    """Opens and closes gateways of people on the app's loop, as the gateway does."""

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self.presence = client.app.plugins.get(Presence)

    def open(self, person: Account) -> None:
        self.client.blocking_portal.call(self.presence.opened, person.id)

    def close(self, person: Account) -> None:
        self.client.blocking_portal.call(self.presence.closed, person.id)


class ChatEvents:
    """What a chat's channel carries, read as a gateway reads it: the header's kind, then the frame."""

    def __init__(self, client: TestClient[Any], chat_id: int) -> None:
        self.client = client
        self.channels = client.app.plugins.get(ChannelsPlugin)
        self.subscriber: Subscriber = client.blocking_portal.call(
            self.channels.subscribe, [chat_channel(chat_id)]
        )
        self.events = self.subscriber.iter_events()

    def next(self) -> tuple[str, dict[str, Any]]:
        async def read() -> bytes:
            with anyio.fail_after(10):
                payload: bytes = await anext(self.events)
                return payload

        kind, _, frame = split_event(self.client.blocking_portal.call(read))
        return chr(kind), json.loads(frame)

    def presence(self, count: int) -> list[tuple[bool, int]]:
        """``(online, user_id)`` of the next ``count`` presence frames."""
        seen: list[tuple[bool, int]] = []
        while len(seen) < count:
            kind, frame = self.next()
            if kind == "O":
                seen.append((frame["online"], frame["user_id"]))
        return seen

    def presence_until_message(self, text: str) -> list[tuple[bool, int]]:
        """``(online, user_id)`` of every presence frame before the message ``text`` (a sentinel)."""
        seen: list[tuple[bool, int]] = []
        while True:
            kind, frame = self.next()
            if frame["type"] == "message" and frame["message"]["text"] == text:
                return seen
            if kind == "O":
                assert frame["type"] == "presence"
                seen.append((frame["online"], frame["user_id"]))


def member(api: Api, viewer: Account, chat_id: int, person: Account) -> dict[str, Any]:
    members: list[dict[str, Any]] = api.chat(viewer, chat_id)["members"]
    return next(m for m in members if m["user_id"] == person.id)
