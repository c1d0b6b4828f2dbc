"""Sending over the socket and over REST: who gets the message, acks, seq order, idempotent client ids."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.sync.client import ClientConnection

from tests.api import Api
from tests.conftest import LiveServer
from tests.realtime.conftest import stored_messages
from tests.wsclient import (
    Frame,
    is_ack,
    is_message,
    is_type,
    messages_in,
    receive_count,
    receive_until,
    send_and_confirm,
    send_frame,
)

# Delivery -----------------------------------------------------------------------------------------


def test_message_reaches_every_device_of_both_members(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_phone, ada_laptop = connect(chat_id, ada.token), connect(chat_id, ada.token)
    bob_phone, bob_laptop = connect(chat_id, bob.token), connect(chat_id, bob.token)

    sent = send_and_confirm(ada_phone, "hello-1", "  Hello, Bob  ")

    assert sent["text"] == "Hello, Bob"
    assert sent["sender_id"] == ada.id
    assert sent["chat_id"] == chat_id
    assert sent["seq"] == 1
    assert sent["client_id"] == "hello-1"
    assert set(sent) == {"id", "chat_id", "seq", "sender_id", "text", "timestamp", "client_id", "read"} | {
        "rev",
        "reply_to",
        "edited_at",
        "deleted",
        "reactions",
    }
    for device in (ada_laptop, bob_phone, bob_laptop):
        frame = receive_until(device, is_message(client_id="hello-1"))[-1]
        assert frame == {"type": "message", "message": sent}


def test_group_message_reaches_every_member(rest: Api, connect: Any) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    sockets = [connect(chat_id, person.token) for person in (ada, bob, cy)]

    sent = send_and_confirm(sockets[2], "from-cy")

    for socket in sockets[:2]:
        assert receive_until(socket, is_message(client_id="from-cy"))[-1]["message"] == sent
    assert sent["sender_id"] == cy.id


def test_ack_goes_to_the_sending_socket_only(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_phone, ada_laptop, bob_phone = (
        connect(chat_id, ada.token),
        connect(chat_id, ada.token),
        connect(chat_id, bob.token),
    )

    send_and_confirm(ada_phone, "first")
    send_and_confirm(ada_phone, "sentinel")

    for socket in (ada_laptop, bob_phone):
        frames = receive_until(socket, is_message(client_id="sentinel"))
        assert [f["type"] for f in frames] == ["message", "message"]


def test_ack_comes_after_the_message_is_stored(rest: Api, connect: Any, shared_database_url: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    send_frame(socket, type="send", client_id="stored", text="hi")
    ack = receive_until(socket, is_ack("stored"))[-1]

    assert [row.id for row in stored_messages(shared_database_url, chat_id)] == [ack["message"]["id"]]


def test_one_senders_messages_get_increasing_seqs_in_the_order_sent(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    client_ids = [f"order-{i}" for i in range(20)]

    for client_id in client_ids:
        send_frame(socket, type="send", client_id=client_id, text=client_id)
    frames = receive_count(socket, is_type("ack"), len(client_ids))

    acks = [f for f in frames if f["type"] == "ack"]
    assert [a["client_id"] for a in acks] == client_ids
    assert [a["message"]["seq"] for a in acks] == list(range(1, 21))


def test_concurrent_senders_get_gap_free_seqs_and_every_socket_gets_every_message_once(
    rest: Api, connect: Any, shared_database_url: str
) -> None:
    senders = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(senders[0], "Team", senders[1:])["id"]
    sockets = [connect(chat_id, person.token) for person in senders]
    start = threading.Barrier(len(sockets))

    def send_thirty(index: int) -> list[Frame]:
        socket = sockets[index]
        start.wait(timeout=10)
        for n in range(30):
            send_frame(socket, type="send", client_id=f"s{index}-{n}", text=f"{index}/{n}")
        return receive_count(socket, is_type("message"), 90, timeout=30)

    with ThreadPoolExecutor(max_workers=len(sockets)) as pool:
        received = list(pool.map(send_thirty, range(len(sockets))))
    rest.send(senders[0], chat_id, "hi", "sentinel")  # seq 91: a late duplicate would come before it
    received = [
        frames + receive_until(socket, is_message(seq=91))
        for socket, frames in zip(sockets, received, strict=True)
    ]

    rows = stored_messages(shared_database_url, chat_id)
    assert [row.seq for row in rows] == list(range(1, 92))
    for index, frames in enumerate(received):
        seqs = [m["seq"] for m in messages_in(frames)]
        assert sorted(seqs) == list(range(1, 92)), f"socket {index} got {len(seqs)} frames"
        acks = {f["client_id"]: f["message"]["seq"] for f in frames if f["type"] == "ack"}
        own = [acks[f"s{index}-{n}"] for n in range(30)]
        assert own == sorted(own)  # each sender's messages in the order sent


# Idempotent sends -----------------------------------------------------------------------------------


def test_repeated_client_id_is_acked_with_the_original_and_not_broadcast(
    rest: Api, connect: Any, shared_database_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    original = send_and_confirm(ada_socket, "once", "first text")

    send_frame(ada_socket, type="send", client_id="once", text="second text")
    repeat = receive_until(ada_socket, is_type("ack"))

    assert repeat == [{"type": "ack", "client_id": "once", "message": original}]
    send_and_confirm(ada_socket, "sentinel")
    assert [m["client_id"] for m in messages_in(receive_until(bob_socket, is_message(seq=2)))] == [
        "once",
        "sentinel",
    ]
    assert [row.client_id for row in stored_messages(shared_database_url, chat_id)] == ["once", "sentinel"]


def test_same_client_id_sent_in_parallel_over_sockets_and_rest_is_stored_once(
    rest: Api, shared_server: LiveServer, connect: Any, shared_database_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    phone, laptop, watcher = (
        connect(chat_id, ada.token),
        connect(chat_id, ada.token),
        connect(chat_id, bob.token),
    )
    client_ids = [f"parallel-{i}" for i in range(5)]

    def over_socket(socket: ClientConnection, client_id: str, start: threading.Barrier) -> int:
        start.wait(timeout=10)
        send_frame(socket, type="send", client_id=client_id, text="hi")
        return int(receive_until(socket, is_ack(client_id))[-1]["message"]["id"])

    def over_rest(api: Api, client_id: str, start: threading.Barrier) -> int:
        start.wait(timeout=10)
        return int(api.send(ada, chat_id, "hi", client_id, expect=(200, 201))["id"])

    with shared_server.http() as http, ThreadPoolExecutor(max_workers=3) as pool:
        for client_id in client_ids:
            start = threading.Barrier(3)
            ids = [
                pool.submit(over_socket, phone, client_id, start),
                pool.submit(over_socket, laptop, client_id, start),
                pool.submit(over_rest, Api(http), client_id, start),
            ]
            assert len({future.result() for future in ids}) == 1

    rows = stored_messages(shared_database_url, chat_id)
    assert sorted(row.client_id for row in rows) == client_ids
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    send_and_confirm(phone, "sentinel")
    delivered = messages_in(receive_until(watcher, is_message(client_id="sentinel")))
    assert [m["seq"] for m in delivered] == [1, 2, 3, 4, 5, 6]


def test_message_sent_over_rest_reaches_live_sockets(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)

    message = rest.send(ada, chat_id, "over REST", "rest-1", expect=201)

    for socket in (ada_socket, bob_socket):
        assert receive_until(socket, is_type("message")) == [{"type": "message", "message": message}]


def test_repeated_rest_send_returns_200_with_the_original_and_is_not_broadcast(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    bob_socket = connect(chat_id, bob.token)
    first = rest.send(ada, chat_id, "first", "rest-once", expect=201)

    again = rest.send(ada, chat_id, "second", "rest-once", expect=200)

    assert again == first
    rest.send(ada, chat_id, "hi", "sentinel")
    delivered = messages_in(receive_until(bob_socket, is_message(client_id="sentinel")))
    assert [m["client_id"] for m in delivered] == ["rest-once", "sentinel"]
