"""The gateway ``/ws``: one socket for every chat of a person, and their inbox kept live on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.sync.client import ClientConnection

from tests.api import Api
from tests.conftest import LiveServer
from tests.reconnect_race import gateway_reconnect_during_removal
from tests.wsclient import (
    Frame,
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

Gateway = Callable[..., ClientConnection]


@pytest.fixture
def gateway(shared_server: LiveServer) -> Iterator[Gateway]:
    """Opens gateways to the server (the token in the query string) and closes them after the test."""
    with ExitStack() as opened:

        def open_(token: str | None, sync: dict[int, int] | None = None, **options: Any) -> ClientConnection:
            options.setdefault("max_queue", None)
            socket = opened.enter_context(open_gateway(shared_server.ws_url, token, **options))
            if sync is not None:
                send_sync(socket, sync)
                receive_until(socket, is_type("synced"))
            return socket

        yield open_


def in_chat(chat_id: int, client_id: str | None = None) -> Callable[[Frame], bool]:
    """A message frame of this chat (with this client id, when given)."""
    return lambda frame: is_message(client_id=client_id)(frame) and frame["message"]["chat_id"] == chat_id


def test_a_person_in_50_chats_gets_the_messages_of_all_of_them_on_one_gateway(
    rest: Api, gateway: Gateway
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_ids = [rest.group(ada, f"Team {index}", [bob])["id"] for index in range(50)]
    bob_gateway = gateway(bob.token, sync={chat_id: 0 for chat_id in chat_ids})

    for index, chat_id in enumerate(chat_ids):
        rest.send(ada, chat_id, f"hello {index}", f"fifty-{index}")

    frames = [f for f in receive_count(bob_gateway, is_message(), 50) if f["type"] == "message"]
    assert sorted(f["message"]["chat_id"] for f in frames) == sorted(chat_ids)
    assert all(f["unread_count"] == 1 for f in frames)


def test_a_gateway_without_sync_goes_live_and_counts_unread_messages(rest: Api, gateway: Gateway) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token)

    rest.send(ada, chat_id, "one", "unread-1")
    rest.send(ada, chat_id, "two", "unread-2")
    frames = receive_until(bob_gateway, in_chat(chat_id, "unread-2"))

    assert [f["unread_count"] for f in frames if f["type"] == "message"] == [1, 2]


def test_reading_on_another_device_and_sending_reset_the_unread_count(rest: Api, gateway: Gateway) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token, sync={chat_id: 0})

    rest.send(ada, chat_id, "one", "count-1")
    rest.read(bob, chat_id, 1)
    rest.send(ada, chat_id, "two", "count-2")
    rest.send(bob, chat_id, "mine", "count-3")
    rest.send(ada, chat_id, "three", "count-4")

    frames = receive_until(bob_gateway, in_chat(chat_id, "count-4"))
    counts = {f["message"]["client_id"]: f["unread_count"] for f in frames if f["type"] == "message"}
    assert counts == {"count-1": 1, "count-2": 1, "count-3": 0, "count-4": 1}


def test_added_to_a_group_while_connected_gets_chat_added_then_its_messages(
    rest: Api, gateway: Gateway
) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [cy])["id"]
    rest.send(ada, chat_id, "before bob", "before-bob")
    bob_gateway = gateway(bob.token, sync={})

    rest.add_member(ada, chat_id, bob)
    rest.send(ada, chat_id, "welcome", "welcome-bob")

    frames = receive_until(bob_gateway, in_chat(chat_id, "welcome-bob"))
    added = [f for f in frames if f["type"] == "chat_added"]
    assert [f["chat"]["id"] for f in added] == [chat_id]
    assert added[0]["chat"]["unread_count"] == 0
    assert added[0]["chat"]["last_message"]["client_id"] == "before-bob"
    assert frames.index(added[0]) < len(frames) - 1
    assert [f["message"]["client_id"] for f in frames if f["type"] == "message"] == ["welcome-bob"]
    assert frames[-1]["unread_count"] == 1


def test_a_new_group_and_a_new_private_chat_are_announced_to_everyone_in_them(
    rest: Api, gateway: Gateway
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    ada_gateway, bob_gateway = gateway(ada.token, sync={}), gateway(bob.token, sync={})

    group_id = rest.group(ada, "Team", [bob])["id"]
    private_id = rest.private_chat(bob, ada)["id"]

    for socket, other in ((ada_gateway, bob), (bob_gateway, ada)):
        frames = receive_count(socket, is_type("chat_added"), 2)
        chats = {f["chat"]["id"]: f["chat"] for f in frames if f["type"] == "chat_added"}
        assert chats.keys() == {group_id, private_id}
        assert chats[group_id]["name"] == "Team"
        assert chats[private_id]["name"] == other.name


def test_removed_gets_chat_removed_and_then_nothing_of_that_chat(rest: Api, gateway: Gateway) -> None:
    ada, bob = rest.people("Ada", "Bob")
    team = rest.group(ada, "Team", [bob])["id"]
    other = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token, sync={team: 0, other: 0})

    rest.remove_member(ada, team, bob)
    rest.send(ada, team, "after the removal", "after-removal")
    rest.send(ada, other, "still here", "marker")

    frames = receive_until(bob_gateway, in_chat(other, "marker"))
    assert {"type": "chat_removed", "chat_id": team} in frames
    assert not [f for f in frames if f["type"] == "message" and f["message"]["chat_id"] == team]


def test_removed_while_the_gateway_waits_for_a_sync_still_gets_chat_removed(
    rest: Api, gateway: Gateway
) -> None:
    """Between the handshake's read of the chats and the opening (the wait for a sync that never comes)."""
    ada, bob = rest.people("Ada", "Bob")
    team = rest.group(ada, "Team", [bob])["id"]
    other = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token)  # no sync: the opening waits WINDI_SYNC_WAIT_SECONDS first

    rest.remove_member(ada, team, bob)
    rest.send(ada, team, "after the removal", "after-removal")
    rest.send(ada, other, "still here", "marker")

    frames = receive_until(bob_gateway, in_chat(other, "marker"))
    assert {"type": "chat_removed", "chat_id": team} in frames
    assert not [f for f in frames if f["type"] == "message" and f["message"]["chat_id"] == team]


def test_leaving_a_group_is_chat_removed_on_every_gateway_of_the_person(rest: Api, gateway: Gateway) -> None:
    ada, bob = rest.people("Ada", "Bob")
    team = rest.group(ada, "Team", [bob])["id"]
    phone, laptop = gateway(bob.token, sync={team: 0}), gateway(bob.token, sync={team: 0})

    rest.remove_member(bob, team, bob)

    for socket in (phone, laptop):
        assert receive_until(socket, is_type("chat_removed"))[-1] == {"type": "chat_removed", "chat_id": team}


def test_no_gateway_hears_a_chat_after_the_removal_under_the_reconnect_race(
    rest: Api, shared_server: LiveServer
) -> None:
    fates = gateway_reconnect_during_removal(rest, shared_server.ws_url)
    assert fates, "no gateway opened while a removal was under way"
    assert set(fates) == {"heard the marker only"}


def test_the_gateway_and_a_chat_socket_of_the_same_person_work_side_by_side(
    rest: Api, gateway: Gateway, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token, sync={chat_id: 0})
    bob_chat_socket = connect(chat_id, bob.token)

    send_frame(bob_chat_socket, type="send", client_id="from-chat-socket", text="hi")
    send_frame(bob_gateway, type="send", chat_id=chat_id, client_id="from-gateway", text="hello")

    on_socket = receive_count(bob_chat_socket, lambda f: f["type"] in ("message", "ack"), 3)
    ack = next(f for f in on_socket if is_ack("from-chat-socket")(f))
    assert "chat_id" not in ack  # the chat socket's frames are as they were
    assert all("unread_count" not in f for f in on_socket)
    on_gateway = receive_count(bob_gateway, lambda f: f["type"] in ("message", "ack"), 3)
    gateway_ack = next(f for f in on_gateway if is_ack("from-gateway")(f))
    assert gateway_ack["chat_id"] == chat_id
    sent = {f["message"]["client_id"] for f in on_gateway if f["type"] == "message"}
    assert sent == {"from-chat-socket", "from-gateway"}


def test_acks_and_errors_on_the_gateway_carry_the_chat_id(rest: Api, gateway: Gateway) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token, sync={chat_id: 0})

    send_frame(bob_gateway, type="send", chat_id=chat_id, client_id="ok", text="hi")
    assert receive_until(bob_gateway, is_ack("ok"))[-1]["chat_id"] == chat_id
    send_frame(bob_gateway, type="send", chat_id=chat_id, client_id="blank", text="   ")
    error = receive_until(bob_gateway, is_type("error"))[-1]
    assert (error["code"], error["client_id"], error["chat_id"]) == ("invalid_frame", "blank", chat_id)
    send_frame(bob_gateway, type="read", chat_id=chat_id, seq=-1)  # refused by the frame's schema
    error = receive_until(bob_gateway, is_type("error"))[-1]
    assert (error["code"], error["chat_id"]) == ("invalid_frame", chat_id)


def test_a_frame_for_a_chat_the_person_is_not_in_gets_an_error_and_the_gateway_stays_open(
    rest: Api, gateway: Gateway
) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    theirs = rest.private_chat(ada, cy)["id"]
    mine = rest.private_chat(ada, bob)["id"]
    bob_gateway = gateway(bob.token, sync={mine: 0})

    for frame in (
        {"type": "send", "chat_id": theirs, "client_id": "intruder", "text": "hi"},
        {"type": "read", "chat_id": theirs, "seq": 1},
        {"type": "typing", "chat_id": theirs},
    ):
        send_frame(bob_gateway, **frame)
        error = receive_until(bob_gateway, is_type("error"))[-1]
        assert (error["code"], error["chat_id"]) == ("not_found", theirs)
    send_frame(bob_gateway, type="send", chat_id=mine, client_id="still-open", text="hi")
    assert receive_until(bob_gateway, is_ack("still-open"))[-1]["chat_id"] == mine


def test_a_frame_without_a_chat_id_and_a_late_sync_are_refused_with_errors(
    rest: Api, gateway: Gateway
) -> None:
    (bob,) = rest.people("Bob")
    bob_gateway = gateway(bob.token, sync={})

    send_frame(bob_gateway, type="send", client_id="nowhere", text="hi")
    missing = receive_until(bob_gateway, is_type("error"))[-1]
    assert (missing["code"], missing["client_id"]) == ("invalid_frame", "nowhere")
    send_frame(bob_gateway, type="sync", chats={})
    assert receive_until(bob_gateway, is_type("error"))[-1]["code"] == "invalid_frame"


def test_typing_on_the_gateway_reaches_the_chat_but_not_the_typing_gateway(
    rest: Api, gateway: Gateway
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_gateway, bob_gateway = gateway(ada.token, sync={chat_id: 0}), gateway(bob.token, sync={chat_id: 0})

    send_frame(bob_gateway, type="typing", chat_id=chat_id)
    assert receive_until(ada_gateway, is_type("typing"))[-1] == {
        "type": "typing",
        "chat_id": chat_id,
        "user_id": bob.id,
    }
    send_frame(bob_gateway, type="send", chat_id=chat_id, client_id="after-typing", text="hi")
    frames = receive_until(bob_gateway, is_ack("after-typing"))
    assert [f["type"] for f in frames if f["type"] != "presence"] in (["ack"], ["message", "ack"])


def test_the_gateway_refuses_a_missing_token_with_4401(shared_server: LiveServer) -> None:
    async def close_code() -> int | None:
        async with connect(f"{shared_server.ws_url}/ws") as socket:
            await socket.wait_closed()
            return socket.close_code

    assert asyncio.run(close_code()) == 4401


def test_logging_out_closes_the_sessions_gateway_with_4401(rest: Api, gateway: Gateway) -> None:
    (bob,) = rest.people("Bob")
    bob_gateway = gateway(bob.token, sync={})

    rest.logout(bob)

    assert receive_until_closed(bob_gateway)[1] == 4401


def test_a_chat_socket_frame_that_names_another_chat_is_refused(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    other = rest.group(ada, "Other", [bob])["id"]
    socket = connect(chat_id, bob.token)

    send_frame(socket, type="send", chat_id=other, client_id="elsewhere", text="hi")
    error = receive_until(socket, is_type("error"))[-1]
    assert (error["code"], error["client_id"]) == ("invalid_frame", "elsewhere")
    send_frame(socket, type="send", chat_id=chat_id, client_id="here", text="hi")
    assert "chat_id" not in receive_until(socket, is_ack("here"))[-1]


def test_a_foreign_origin_is_refused_on_the_gateway_with_4403(rest: Api, gateway: Gateway) -> None:
    (bob,) = rest.people("Bob")
    refused = gateway(bob.token, headers={"Origin": "https://elsewhere.example"})
    assert receive_until_closed(refused) == ([], 4403)


def test_the_gateway_takes_a_bearer_header_and_renews_its_token_in_band(rest: Api, gateway: Gateway) -> None:
    (bob,) = rest.people("Bob")
    bob_gateway = gateway(None, headers=bob.headers, sync={})

    renewed = rest.refresh(bob.refresh_token)
    send_frame(bob_gateway, type="auth", token=renewed["access_token"])

    assert receive_until(bob_gateway, is_type("auth_ok"))[-1]["type"] == "auth_ok"


def test_a_gateway_hears_someone_come_online_once_however_many_chats_they_share(
    rest: Api, gateway: Gateway
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    private_id = rest.private_chat(ada, bob)["id"]
    group_id = rest.group(ada, "Team", [bob])["id"]
    ada_gateway = gateway(ada.token, sync={private_id: 0, group_id: 0})

    gateway(bob.token, sync={private_id: 0, group_id: 0})
    rest.send(ada, group_id, "marker", "presence-marker")

    frames = receive_until(ada_gateway, in_chat(group_id, "presence-marker"))
    presence = [f for f in frames if f["type"] == "presence"]
    assert [(f["user_id"], f["online"]) for f in presence] == [(bob.id, True)]
    assert rest.chat(ada, private_id)["members"][1]["online"] in (True, False)  # shown in the view


def test_edits_deletes_and_reactions_on_the_gateway_name_their_chat(rest: Api, gateway: Gateway) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_gateway, bob_gateway = gateway(ada.token, sync={chat_id: 0}), gateway(bob.token, sync={chat_id: 0})
    send_frame(bob_gateway, type="send", chat_id=chat_id, client_id="to-edit", text="helo")
    seq = receive_until(bob_gateway, is_ack("to-edit"))[-1]["message"]["seq"]

    send_frame(bob_gateway, type="edit", chat_id=chat_id, seq=seq, text="hello", client_id="edit-1")
    ack = receive_until(bob_gateway, is_ack("edit-1"))[-1]
    assert (ack["chat_id"], ack["message"]["text"]) == (chat_id, "hello")
    updated = receive_until(ada_gateway, is_type("message_updated"))[-1]
    assert (updated["message"]["chat_id"], updated["message"]["text"]) == (chat_id, "hello")

    send_frame(bob_gateway, type="react", chat_id=chat_id, seq=seq, emoji="👍", on=True, client_id="react-1")
    assert receive_until(bob_gateway, is_ack("react-1"))[-1]["chat_id"] == chat_id
    send_frame(bob_gateway, type="delete", chat_id=chat_id, seq=seq, client_id="delete-1")
    assert receive_until(bob_gateway, is_ack("delete-1"))[-1]["message"]["deleted"] is True
    send_frame(bob_gateway, type="edit", seq=seq, text="no chat", client_id="edit-2")
    error = receive_until(bob_gateway, is_type("error"))[-1]
    assert (error["code"], error["client_id"]) == ("invalid_frame", "edit-2")
