"""Presence on one process: online while a gateway is open, offline after the grace, shown in the chat views.

The gateway's calls (``Presence.opened`` and ``closed``) are made on the app's own event loop, as the
gateway makes them; what the chats hear is read from the channels, as a gateway would read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from litestar.channels import ChannelsPlugin
from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import fetch, make_settings, wait_for
from tests.presence_driver import ChatEvents, Gateways, member
from windi_chat.app import create_app
from windi_chat.config import Settings
from windi_chat.events import PRESENCE_CHANNEL
from windi_chat.presence import RecentPresence

GRACE = 0.5
HEARTBEAT = 0.2


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient[Any]]:
    settings = make_settings(database_url, presence_grace_seconds=GRACE, presence_heartbeat_seconds=HEARTBEAT)
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client


def test_a_person_is_online_while_a_gateway_is_open_and_offline_after_the_grace(
    client: TestClient[Any], api: Api
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(client, chat_id)
    gateways = Gateways(client)

    gateways.open(bob)
    assert member(api, ada, chat_id, bob)["online"] is True
    gateways.close(bob)
    assert events.presence(2) == [(True, bob.id), (False, bob.id)]  # the second after the grace
    assert member(api, ada, chat_id, bob)["online"] is False


def test_a_reconnect_within_the_grace_does_not_flicker(client: TestClient[Any], api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(client, chat_id)
    gateways = Gateways(client)

    gateways.open(bob)
    gateways.close(bob)
    gateways.open(bob)  # well within the grace
    gateways.close(bob)
    assert events.presence(2) == [(True, bob.id), (False, bob.id)]
    api.send(ada, chat_id, "sentinel")
    assert events.presence_until_message("sentinel") == []  # nothing more


def test_online_until_the_last_of_several_gateways_closes(client: TestClient[Any], api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(client, chat_id)
    gateways = Gateways(client)

    gateways.open(bob)
    gateways.open(bob)  # a second device
    gateways.close(bob)
    api.send(ada, chat_id, "one left")
    assert events.presence_until_message("one left") == [(True, bob.id)]
    assert member(api, ada, chat_id, bob)["online"] is True
    gateways.close(bob)
    wait_for(lambda: member(api, ada, chat_id, bob)["online"] is False)


def test_every_chat_of_the_person_hears_it_once(client: TestClient[Any], api: Api) -> None:
    ada, bob, cy = api.people("Ada", "Bob", "Cy")
    private = api.private_chat(ada, bob)["id"]
    group = api.group(cy, "Team", [bob])["id"]
    elsewhere = api.private_chat(ada, cy)["id"]
    watched = {chat_id: ChatEvents(client, chat_id) for chat_id in (private, group, elsewhere)}

    Gateways(client).open(bob)
    api.send(ada, private, "sentinel")
    api.send(cy, group, "sentinel")
    api.send(cy, elsewhere, "sentinel")
    assert watched[private].presence_until_message("sentinel") == [(True, bob.id)]
    assert watched[group].presence_until_message("sentinel") == [(True, bob.id)]
    assert watched[elsewhere].presence_until_message("sentinel") == []


def test_a_close_without_an_open_changes_nothing(client: TestClient[Any], api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(client, chat_id)

    Gateways(client).close(bob)
    api.send(ada, chat_id, "sentinel")
    assert events.presence_until_message("sentinel") == []
    assert member(api, ada, chat_id, bob)["online"] is False


def test_chat_views_show_online_and_last_seen(client: TestClient[Any], api: Api, database_url: str) -> None:
    ada, bob, cy = api.people("Ada", "Bob", "Cy")
    chat_id = api.group(ada, "Team", [bob, cy])["id"]
    gateways = Gateways(client)
    events = ChatEvents(client, chat_id)

    never = member(api, ada, chat_id, bob)
    assert (never["online"], never["last_seen"]) == (False, None)

    gateways.open(bob)
    online = member(api, ada, chat_id, bob)
    assert online["online"] is True
    came_online = datetime.fromisoformat(online["last_seen"])
    inbox_entry = next(chat for chat in api.chats(cy) if chat["id"] == chat_id)
    assert {m["user_id"]: m["online"] for m in inbox_entry["members"]} == {
        ada.id: False,
        bob.id: True,
        cy.id: False,
    }

    gateways.close(bob)
    assert events.presence(2) == [(True, bob.id), (False, bob.id)]
    offline = member(api, ada, chat_id, bob)
    assert offline["online"] is False
    assert datetime.fromisoformat(offline["last_seen"]) >= came_online
    stored = fetch(database_url, "SELECT last_seen_at FROM users WHERE id = :id", id=bob.id)[0][0]
    assert stored is not None


def test_the_chat_socket_does_not_carry_presence(client: TestClient[Any], api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    with client.websocket_connect(f"/ws/{chat_id}?token={ada.token}") as socket:
        Gateways(client).open(bob)
        api.send(bob, chat_id, "after the presence frame")
        frame = socket.receive_json(timeout=10)
        assert frame["type"] == "message"
        assert frame["message"]["text"] == "after the presence frame"


def test_presence_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"WINDI_PRESENCE_GRACE_SECONDS": "0.5", "WINDI_PRESENCE_HEARTBEAT_SECONDS": "0.2"}, env_file=None
    )
    assert (settings.presence_grace_seconds, settings.presence_heartbeat_seconds) == (0.5, 0.2)
    defaults = Settings.from_env({}, env_file=None)
    assert (defaults.presence_grace_seconds, defaults.presence_heartbeat_seconds) == (30.0, 5.0)


def announce(client: TestClient[Any], payload: bytes) -> None:
    """What another process would say on the presence channel."""
    client.app.plugins.get(ChannelsPlugin).publish(payload, PRESENCE_CHANNEL)


def test_a_wrong_offline_announcement_is_answered_with_online(client: TestClient[Any], api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(client, chat_id)

    Gateways(client).open(bob)
    announce(client, b"Xother\n%d" % bob.id)  # another process told Bob's chats he went offline
    assert events.presence(2) == [(True, bob.id), (True, bob.id)]
    assert member(api, ada, chat_id, bob)["online"] is True


def test_the_people_of_a_process_gone_silent_are_announced_offline_after_the_grace(
    client: TestClient[Any], api: Api
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(client, chat_id)

    # Another process holds Bob, then says nothing more. Its origin sorts after this process's (hex
    # digits), so this one is the lowest live process: it announces Bob offline.
    def holding_bob() -> bool:  # each look is one more heartbeat: it is alive until we have seen it
        announce(client, b"Hzz-silent\n%d" % bob.id)
        return member(api, ada, chat_id, bob)["online"] is True

    wait_for(holding_bob)
    assert events.presence(1) == [(False, bob.id)]  # once silent past the grace and two heartbeats
    assert member(api, ada, chat_id, bob)["online"] is False
    assert member(api, ada, chat_id, bob)["last_seen"] is not None


def test_a_gateway_forwards_one_copy_of_a_change_heard_in_several_chats() -> None:
    recent = RecentPresence()
    online = '{"type":"presence","user_id":7,"online":true,"last_seen":"2026-12-03T08:00:00Z"}'
    offline = '{"type":"presence","user_id":7,"online":false,"last_seen":"2026-12-03T08:05:00Z"}'
    assert [recent.fresh(frame) for frame in (online, online, offline, online, offline)] == [
        True,
        False,
        True,
        False,
        False,
    ]
