"""The gateway's ``sync``: what a device missed while it was off, in every chat, and the chats it missed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api import Api
from tests.conftest import LiveServer
from tests.wsclient import (
    is_ack,
    is_message,
    is_type,
    open_gateway,
    receive_count,
    receive_until,
    receive_until_closed,
    send_frame,
    send_sync,
)


def test_sync_replays_each_named_chat_and_announces_a_chat_added_meanwhile(
    rest: Api, shared_server: LiveServer
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    private_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, private_id, "seen", "seen-1")

    # Bob's device is off: a message in the chat it knows, and a group it has never heard of.
    rest.send(ada, private_id, "missed one", "missed-1")
    rest.send(ada, private_id, "missed two", "missed-2")
    group_id = rest.group(ada, "While you were away", [bob])["id"]
    rest.send(ada, group_id, "in the new group", "group-1")

    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        send_sync(gateway, {private_id: 1})
        frames = receive_count(gateway, lambda f: f["type"] in ("message", "chat_added"), 3)
        replayed = [f for f in frames if f["type"] == "message"]
        assert [(f["message"]["client_id"], f["unread_count"]) for f in replayed] == [
            ("missed-1", 2),
            ("missed-2", 3),
        ]
        (added,) = [f for f in frames if f["type"] == "chat_added"]
        assert added["chat"]["id"] == group_id
        assert added["chat"]["last_message"]["client_id"] == "group-1"
        assert added["chat"]["unread_count"] == 1

        rest.send(ada, group_id, "live now", "group-2")
        live = receive_until(gateway, is_message(client_id="group-2"))
        assert [f["message"]["client_id"] for f in live if f["type"] == "message"] == ["group-2"]
        assert live[-1]["unread_count"] == 2


def test_sync_of_a_chat_the_person_left_meanwhile_is_answered_with_chat_removed(
    rest: Api, shared_server: LiveServer
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    group_id = rest.group(ada, "Team", [bob])["id"]
    rest.remove_member(ada, group_id, bob)
    rest.send(ada, group_id, "not for bob", "not-for-bob")

    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        send_sync(gateway, {group_id: 0})
        assert receive_until(gateway, is_type("chat_removed"))[-1] == {
            "type": "chat_removed",
            "chat_id": group_id,
        }
        send_frame(gateway, type="send", chat_id=group_id, client_id="too-late", text="hi")
        frames = receive_until(gateway, is_type("error"))
        assert not [f for f in frames if f["type"] == "message"]


def test_sync_ahead_of_a_chat_gets_a_resync_for_that_chat(rest: Api, shared_server: LiveServer) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, chat_id, "one", "ahead-1")

    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        send_sync(gateway, {chat_id: 7})
        resync = receive_until(gateway, is_type("resync"))[-1]
        assert resync == {"type": "resync", "after_seq": 7, "last_seq": 1, "chat_id": chat_id}


@pytest.mark.parametrize(
    "sync", [{"chats": {"not an id": 1}}, {"chats": {}, "rev": {}}, {"chats": {"1": -1}}, {"chats": []}]
)
def test_a_first_sync_that_is_not_valid_closes_the_gateway_with_4400_and_why(
    rest: Api, shared_server: LiveServer, sync: dict[str, Any]
) -> None:
    """Rather than leave a client waiting for ``synced`` that never comes."""
    bob = rest.people("Bob")[0]
    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        send_frame(gateway, type="sync", **sync)
        _, code = receive_until_closed(gateway)
        assert code == 4400
        assert gateway.close_reason.startswith("invalid sync: ")


def test_a_first_frame_that_is_not_json_is_an_error_and_the_gateway_goes_live(
    rest: Api, shared_server: LiveServer
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        gateway.send("{not json")
        assert receive_until(gateway, is_type("error"))[-1]["code"] == "invalid_json"
        send_frame(gateway, type="send", chat_id=chat_id, client_id="live", text="hi")
        assert receive_until(gateway, is_ack("live"))[-1]["chat_id"] == chat_id


def test_a_message_sent_while_the_gateway_waits_for_sync_is_not_lost(
    rest: Api, shared_server: LiveServer
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        rest.send(ada, chat_id, "during the wait", "waiting")
        send_sync(gateway, {chat_id: 0})
        frames = receive_until(gateway, is_message(client_id="waiting"))
        assert [f["message"]["client_id"] for f in frames if f["type"] == "message"] == ["waiting"]


def test_sync_by_rev_replays_every_change_once_then_live_changes(
    rest: Api, shared_server: LiveServer
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    first = rest.send(ada, chat_id, "frist", "rev-1")
    rest.send(ada, chat_id, "second", "rev-2")
    rest.edit(ada, chat_id, first["seq"], "first")  # the device was off: a new message and an edit

    with open_gateway(shared_server.ws_url, bob.token, max_queue=None) as gateway:
        send_frame(gateway, type="sync", revs={str(chat_id): first["rev"]})
        frames = receive_until(gateway, is_type("synced"))
        replayed = [f["message"] for f in frames if f["type"] == "message"]
        assert [(m["client_id"], m["text"]) for m in replayed] == [("rev-2", "second"), ("rev-1", "first")]
        assert [m["rev"] for m in replayed] == sorted(m["rev"] for m in replayed)

        rest.edit(ada, chat_id, first["seq"], "first!")
        updated = receive_until(gateway, is_type("message_updated"))[-1]
        assert updated["message"]["text"] == "first!"
