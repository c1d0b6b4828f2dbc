"""Read markers and typing over the socket: who is told, and that markers only move forward."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.api import Account, Api
from tests.conftest import LiveServer, fetch
from tests.wsclient import is_message, is_type, receive_count, receive_until, send_and_confirm, send_frame


def read_marker(database_url: str, chat_id: int, user_id: int) -> int:
    """The member's read marker as stored."""
    rows = fetch(
        database_url,
        "SELECT read_seq FROM chat_members WHERE chat_id = :chat_id AND user_id = :user_id",
        chat_id=chat_id,
        user_id=user_id,
    )
    return int(rows[0][0])


# Read markers -----------------------------------------------------------------------------------------


def test_read_in_a_private_chat_tells_the_sender_everything_is_read(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    sent = send_and_confirm(ada_socket, "m1")
    assert sent["read"] is False

    send_frame(bob_socket, type="read", seq=1)

    expected = {"type": "read", "chat_id": chat_id, "user_id": bob.id, "seq": 1, "all_read_seq": 1}
    assert receive_until(ada_socket, is_type("read"))[-1] == expected
    assert receive_until(bob_socket, is_type("read"))[-1] == expected


def test_group_all_read_seq_moves_only_when_the_last_member_reads(rest: Api, connect: Any) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    ada_socket, bob_socket, cy_socket = (connect(chat_id, p.token) for p in (ada, bob, cy))
    send_and_confirm(ada_socket, "m1")

    send_frame(bob_socket, type="read", seq=1)
    after_bob = receive_until(ada_socket, is_type("read"))[-1]
    send_frame(cy_socket, type="read", seq=1)
    after_cy = receive_until(ada_socket, is_type("read"))[-1]

    assert (after_bob["user_id"], after_bob["seq"], after_bob["all_read_seq"]) == (bob.id, 1, 0)
    assert (after_cy["user_id"], after_cy["seq"], after_cy["all_read_seq"]) == (cy.id, 1, 1)


def test_last_two_members_reading_at_once_announce_that_everything_is_read(
    rest: Api, shared_server: LiveServer, connect: Any
) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    ada_socket = connect(chat_id, ada.token)
    stale_rounds = []

    with shared_server.http() as bob_http, shared_server.http() as cy_http, ThreadPoolExecutor(2) as pool:
        for seq in range(1, 21):
            send_and_confirm(ada_socket, f"m{seq}")
            start = threading.Barrier(2)

            def read(api: Api, reader: Account, seq: int = seq, start: Any = start) -> None:
                start.wait(timeout=10)
                api.read(reader, chat_id, seq, expect=200)

            list(pool.map(read, (Api(bob_http), Api(cy_http)), (bob, cy)))
            events = [f for f in receive_count(ada_socket, is_type("read"), 2) if f["type"] == "read"]
            if max(e["all_read_seq"] for e in events) != seq:
                stale_rounds.append(seq)

    assert stale_rounds == []


def test_reading_a_lower_seq_does_not_move_the_marker_back(
    rest: Api, connect: Any, shared_database_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    send_and_confirm(ada_socket, "m1")
    send_and_confirm(ada_socket, "m2")
    send_frame(bob_socket, type="read", seq=2)
    receive_until(ada_socket, is_type("read"))

    send_frame(bob_socket, type="read", seq=1)
    marker = rest.read(bob, chat_id, 1, expect=200)
    send_frame(bob_socket, type="typing")  # the sentinel, handled after the read frame

    assert marker == {"seq": 2, "all_read_seq": 2}
    assert [f["type"] for f in receive_until(ada_socket, is_type("typing"))] == ["typing"]
    assert read_marker(shared_database_url, chat_id, bob.id) == 2


def test_read_marker_stops_at_the_last_seq(rest: Api, connect: Any, shared_database_url: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    send_and_confirm(ada_socket, "m1")
    send_and_confirm(ada_socket, "m2")

    send_frame(bob_socket, type="read", seq=99)
    event = receive_until(ada_socket, is_type("read"))[-1]
    marker = rest.read(bob, chat_id, 1000)

    assert (event["seq"], event["all_read_seq"]) == (2, 2)
    assert marker == {"seq": 2, "all_read_seq": 2}
    assert read_marker(shared_database_url, chat_id, bob.id) == 2


def test_sending_announces_all_read_when_the_sender_was_the_last_reader(rest: Api, connect: Any) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    rest.send(bob, chat_id, "hi", "from bob")  # seq 1: Bob has read it by sending it
    rest.read(cy, chat_id, 1)
    bob_socket = connect(chat_id, bob.token)

    rest.send(ada, chat_id, "hi", "from ada")  # seq 2: Ada, the last reader of 1, now read it too

    frames = receive_until(bob_socket, is_type("read"))
    assert frames[-1] == {"type": "read", "chat_id": chat_id, "user_id": ada.id, "seq": 2, "all_read_seq": 1}


# Typing -------------------------------------------------------------------------------------------


def test_typing_reaches_others_and_the_senders_other_devices_but_not_its_own_socket(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_phone, ada_laptop, bob_socket = (
        connect(chat_id, ada.token),
        connect(chat_id, ada.token),
        connect(chat_id, bob.token),
    )

    send_frame(ada_phone, type="typing")
    send_frame(ada_phone, type="send", client_id="sentinel", text="hi")

    expected = {"type": "typing", "chat_id": chat_id, "user_id": ada.id}
    for socket in (bob_socket, ada_laptop):
        assert receive_until(socket, is_type("typing")) == [expected]
    own = receive_until(ada_phone, is_message(client_id="sentinel"))
    assert "typing" not in [f["type"] for f in own]
