"""The chat WebSocket ``/ws/{chat_id}`` against a real uvicorn process, on SQLite and PostgreSQL.

Starting a server takes about two seconds, so this module starts one per database and shares it: every
test makes its own people and chats, and nothing here depends on what another test left behind.

"Nothing else arrived" is proven without sleeping: after the action under test, a later event of the
same chat (a sentinel) is produced, and the frames received before the sentinel are inspected. Events of
one chat reach each socket in the order they were published.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.conftest import (
    TEST_SECRET,
    Account,
    LiveServer,
    fetch,
    insert_messages,
    register_and_login,
    start_server,
    stop_server,
    wait_for,
)
from tests.wsclient import (
    Frame,
    is_ack,
    is_message,
    is_type,
    open_socket,
    receive_count,
    receive_until,
    receive_until_closed,
    send_frame,
)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
MAX_FRAME_BYTES = 65_536

_unique = itertools.count(1)


# Fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Overrides conftest's per-test database, which the shared server below could not follow."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(scope="module")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Overrides conftest's per-test server: one uvicorn process for the whole module."""
    server = start_server(database_url, tmp_path_factory.mktemp("realtime") / "server.log")
    yield server
    stop_server(server)


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.http() as client:
        yield client


@pytest.fixture
def people(http: httpx.Client) -> Callable[..., list[Account]]:
    """Registers people with addresses no other test uses."""

    def make(*names: str) -> list[Account]:
        return [
            register_and_login(http, name, f"{name.lower()}-{next(_unique)}@example.com") for name in names
        ]

    return make


@pytest.fixture
def connect(live_server: LiveServer) -> Iterator[Callable[..., ClientConnection]]:
    """Opens sockets to the server (the token in the query string) and closes them after the test."""
    with ExitStack() as opened:

        def open_(chat_id: int | str, token: str | None, **options: Any) -> ClientConnection:
            return opened.enter_context(open_socket(live_server.ws_url, chat_id, token, **options))

        yield open_


# Helpers ------------------------------------------------------------------------------------------


def private_chat(http: httpx.Client, caller: Account, other: Account) -> int:
    response = http.post("/chats", json={"type": "private", "user_id": other.id}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def group_chat(http: httpx.Client, owner: Account, members: list[Account]) -> int:
    response = http.post(
        "/chats",
        json={"type": "group", "name": "Team", "member_ids": [m.id for m in members]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def post_message(http: httpx.Client, sender: Account, chat_id: int, client_id: str, text: str = "hi") -> Any:
    return http.post(
        f"/chats/{chat_id}/messages", json={"text": text, "client_id": client_id}, headers=sender.headers
    )


def post_read(http: httpx.Client, reader: Account, chat_id: int, seq: int) -> Any:
    return http.post(f"/chats/{chat_id}/read", json={"seq": seq}, headers=reader.headers)


def send_and_confirm(socket: ClientConnection, client_id: str, text: str = "hi") -> Frame:
    """Send a message and wait for both its ack and its own message frame (in either order)."""
    send_frame(socket, type="send", client_id=client_id, text=text)
    frames = receive_count(socket, lambda f: is_ack(client_id)(f) or is_message(client_id=client_id)(f), 2)
    ack = next(f for f in frames if is_ack(client_id)(f))
    echo = next(f for f in frames if is_message(client_id=client_id)(f))
    assert ack["message"] == echo["message"]
    return dict(ack["message"])


def messages_in(frames: list[Frame]) -> list[Frame]:
    return [f["message"] for f in frames if f["type"] == "message"]


def stored_messages(database_url: str, chat_id: int) -> list[Any]:
    return fetch(
        database_url,
        "SELECT id, seq, sender_id, client_id, text FROM messages WHERE chat_id = :chat_id ORDER BY seq",
        chat_id=chat_id,
    )


def read_marker(database_url: str, chat_id: int, user_id: int) -> int:
    rows = fetch(
        database_url,
        "SELECT read_seq FROM chat_members WHERE chat_id = :chat_id AND user_id = :user_id",
        chat_id=chat_id,
        user_id=user_id,
    )
    return int(rows[0][0])


# Delivery -----------------------------------------------------------------------------------------


def test_message_reaches_every_device_of_both_members(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    ada_phone, ada_laptop = connect(chat_id, ada.token), connect(chat_id, ada.token)
    bob_phone, bob_laptop = connect(chat_id, bob.token), connect(chat_id, bob.token)

    sent = send_and_confirm(ada_phone, "hello-1", "  Hello, Bob  ")

    assert sent["text"] == "Hello, Bob"
    assert sent["sender_id"] == ada.id
    assert sent["chat_id"] == chat_id
    assert sent["seq"] == 1
    assert sent["client_id"] == "hello-1"
    assert set(sent) == {"id", "chat_id", "seq", "sender_id", "text", "timestamp", "client_id", "read"}
    for device in (ada_laptop, bob_phone, bob_laptop):
        frame = receive_until(device, is_message(client_id="hello-1"))[-1]
        assert frame == {"type": "message", "message": sent}


def test_group_message_reaches_every_member(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob, cy = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, ada, [bob, cy])
    sockets = [connect(chat_id, person.token) for person in (ada, bob, cy)]

    sent = send_and_confirm(sockets[2], "from-cy")

    for socket in sockets[:2]:
        assert receive_until(socket, is_message(client_id="from-cy"))[-1]["message"] == sent
    assert sent["sender_id"] == cy.id


def test_ack_goes_to_the_sending_socket_only(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
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


def test_ack_comes_after_the_message_is_stored(
    people: Any, http: httpx.Client, connect: Any, database_url: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)

    send_frame(socket, type="send", client_id="stored", text="hi")
    ack = receive_until(socket, is_ack("stored"))[-1]

    assert [row.id for row in stored_messages(database_url, chat_id)] == [ack["message"]["id"]]


def test_one_senders_messages_get_increasing_seqs_in_the_order_sent(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)
    client_ids = [f"order-{i}" for i in range(20)]

    for client_id in client_ids:
        send_frame(socket, type="send", client_id=client_id, text=client_id)
    frames = receive_count(socket, is_type("ack"), len(client_ids))

    acks = [f for f in frames if f["type"] == "ack"]
    assert [a["client_id"] for a in acks] == client_ids
    assert [a["message"]["seq"] for a in acks] == list(range(1, 21))


def test_concurrent_senders_get_gap_free_seqs_and_every_socket_gets_every_message_once(
    people: Any, http: httpx.Client, connect: Any, database_url: str
) -> None:
    senders = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, senders[0], senders[1:])
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
    post_message(http, senders[0], chat_id, "sentinel")  # seq 91: a late duplicate would come before it
    received = [
        frames + receive_until(socket, is_message(seq=91))
        for socket, frames in zip(sockets, received, strict=True)
    ]

    rows = stored_messages(database_url, chat_id)
    assert [row.seq for row in rows] == list(range(1, 92))
    for index, frames in enumerate(received):
        seqs = [m["seq"] for m in messages_in(frames)]
        assert sorted(seqs) == list(range(1, 92)), f"socket {index} got {len(seqs)} frames"
        acks = {f["client_id"]: f["message"]["seq"] for f in frames if f["type"] == "ack"}
        own = [acks[f"s{index}-{n}"] for n in range(30)]
        assert own == sorted(own)  # each sender's messages in the order sent


# Idempotent sends -----------------------------------------------------------------------------------


def test_repeated_client_id_is_acked_with_the_original_and_not_broadcast(
    people: Any, http: httpx.Client, connect: Any, database_url: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
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
    assert [row.client_id for row in stored_messages(database_url, chat_id)] == ["once", "sentinel"]


def test_same_client_id_sent_in_parallel_over_sockets_and_rest_is_stored_once(
    people: Any, live_server: LiveServer, http: httpx.Client, connect: Any, database_url: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
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

    def over_rest(rest: httpx.Client, client_id: str, start: threading.Barrier) -> int:
        start.wait(timeout=10)
        response = post_message(rest, ada, chat_id, client_id)
        assert response.status_code in (200, 201), response.text
        return int(response.json()["id"])

    with live_server.http() as rest, ThreadPoolExecutor(max_workers=3) as pool:
        for client_id in client_ids:
            start = threading.Barrier(3)
            ids = [
                pool.submit(over_socket, phone, client_id, start),
                pool.submit(over_socket, laptop, client_id, start),
                pool.submit(over_rest, rest, client_id, start),
            ]
            assert len({future.result() for future in ids}) == 1

    rows = stored_messages(database_url, chat_id)
    assert sorted(row.client_id for row in rows) == client_ids
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5]
    send_and_confirm(phone, "sentinel")
    delivered = messages_in(receive_until(watcher, is_message(client_id="sentinel")))
    assert [m["seq"] for m in delivered] == [1, 2, 3, 4, 5, 6]


def test_message_sent_over_rest_reaches_live_sockets(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)

    response = post_message(http, ada, chat_id, "rest-1", "over REST")

    assert response.status_code == 201
    for socket in (ada_socket, bob_socket):
        assert receive_until(socket, is_type("message")) == [{"type": "message", "message": response.json()}]


def test_repeated_rest_send_returns_200_with_the_original_and_is_not_broadcast(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    bob_socket = connect(chat_id, bob.token)
    first = post_message(http, ada, chat_id, "rest-once", "first")

    again = post_message(http, ada, chat_id, "rest-once", "second")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    post_message(http, ada, chat_id, "sentinel")
    delivered = messages_in(receive_until(bob_socket, is_message(client_id="sentinel")))
    assert [m["client_id"] for m in delivered] == ["rest-once", "sentinel"]


# Read markers -----------------------------------------------------------------------------------------


def test_read_in_a_private_chat_tells_the_sender_everything_is_read(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    sent = send_and_confirm(ada_socket, "m1")
    assert sent["read"] is False

    send_frame(bob_socket, type="read", seq=1)

    expected = {"type": "read", "chat_id": chat_id, "user_id": bob.id, "seq": 1, "all_read_seq": 1}
    assert receive_until(ada_socket, is_type("read"))[-1] == expected
    assert receive_until(bob_socket, is_type("read"))[-1] == expected


def test_group_all_read_seq_moves_only_when_the_last_member_reads(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob, cy = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, ada, [bob, cy])
    ada_socket, bob_socket, cy_socket = (connect(chat_id, p.token) for p in (ada, bob, cy))
    send_and_confirm(ada_socket, "m1")

    send_frame(bob_socket, type="read", seq=1)
    after_bob = receive_until(ada_socket, is_type("read"))[-1]
    send_frame(cy_socket, type="read", seq=1)
    after_cy = receive_until(ada_socket, is_type("read"))[-1]

    assert (after_bob["user_id"], after_bob["seq"], after_bob["all_read_seq"]) == (bob.id, 1, 0)
    assert (after_cy["user_id"], after_cy["seq"], after_cy["all_read_seq"]) == (cy.id, 1, 1)


def test_last_two_members_reading_at_once_announce_that_everything_is_read(
    people: Any,
    live_server: LiveServer,
    http: httpx.Client,
    connect: Any,
    database_url: str,
) -> None:
    ada, bob, cy = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, ada, [bob, cy])
    ada_socket = connect(chat_id, ada.token)
    stale_rounds = []

    with live_server.http() as bob_http, live_server.http() as cy_http, ThreadPoolExecutor(2) as pool:
        for seq in range(1, 21):
            send_and_confirm(ada_socket, f"m{seq}")
            start = threading.Barrier(2)

            def read(client: httpx.Client, reader: Account, seq: int = seq, start: Any = start) -> None:
                start.wait(timeout=10)
                assert post_read(client, reader, chat_id, seq).status_code == 200

            list(pool.map(read, (bob_http, cy_http), (bob, cy)))
            events = [f for f in receive_count(ada_socket, is_type("read"), 2) if f["type"] == "read"]
            if max(e["all_read_seq"] for e in events) != seq:
                stale_rounds.append(seq)

    assert stale_rounds == []


def test_reading_a_lower_seq_does_not_move_the_marker_back(
    people: Any, http: httpx.Client, connect: Any, database_url: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    send_and_confirm(ada_socket, "m1")
    send_and_confirm(ada_socket, "m2")
    send_frame(bob_socket, type="read", seq=2)
    receive_until(ada_socket, is_type("read"))

    send_frame(bob_socket, type="read", seq=1)
    rest = post_read(http, bob, chat_id, 1)
    send_frame(bob_socket, type="typing")  # the sentinel, handled after the read frame

    assert rest.status_code == 200
    assert rest.json() == {"seq": 2, "all_read_seq": 2}
    assert [f["type"] for f in receive_until(ada_socket, is_type("typing"))] == ["typing"]
    assert read_marker(database_url, chat_id, bob.id) == 2


def test_read_marker_stops_at_the_last_seq(
    people: Any, http: httpx.Client, connect: Any, database_url: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)
    send_and_confirm(ada_socket, "m1")
    send_and_confirm(ada_socket, "m2")

    send_frame(bob_socket, type="read", seq=99)
    event = receive_until(ada_socket, is_type("read"))[-1]
    rest = post_read(http, bob, chat_id, 1000)

    assert (event["seq"], event["all_read_seq"]) == (2, 2)
    assert rest.json() == {"seq": 2, "all_read_seq": 2}
    assert read_marker(database_url, chat_id, bob.id) == 2


# Typing -------------------------------------------------------------------------------------------


def test_typing_reaches_others_and_the_senders_other_devices_but_not_its_own_socket(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
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


# Catch-up -----------------------------------------------------------------------------------------


def test_after_seq_sends_the_missed_messages_then_live_ones(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    for n in range(1, 6):
        assert post_message(http, ada, chat_id, f"m{n}").status_code == 201

    bob_socket = connect(chat_id, bob.token, after_seq=2)
    post_message(http, ada, chat_id, "m6")

    frames = receive_until(bob_socket, is_message(seq=6))
    assert [f["type"] for f in frames] == ["message"] * 4
    assert [(m["seq"], m["client_id"]) for m in messages_in(frames)] == [
        (3, "m3"),
        (4, "m4"),
        (5, "m5"),
        (6, "m6"),
    ]


def test_catch_up_has_no_gap_or_duplicate_while_messages_keep_arriving(
    people: Any, live_server: LiveServer, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    sent_count = 0

    def keep_sending() -> None:
        nonlocal sent_count
        with live_server.http() as rest:
            for n in range(1, 61):
                assert post_message(rest, ada, chat_id, f"m{n}").status_code == 201
                sent_count = n

    with ThreadPoolExecutor(max_workers=1) as pool:
        sending = pool.submit(keep_sending)
        wait_for(lambda: sent_count >= 10 or sending.done())
        bob_socket = connect(chat_id, bob.token, after_seq=3)
        sending.result()

    seqs = [m["seq"] for m in messages_in(receive_until(bob_socket, is_message(seq=60)))]
    assert seqs == list(range(4, 61))


def test_too_many_missed_messages_get_a_resync_frame_and_the_socket_stays_live(
    people: Any, http: httpx.Client, connect: Any, database_url: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    insert_messages(database_url, chat_id, ada.id, [f"old {n}" for n in range(1, 1006)])

    bob_socket = connect(chat_id, bob.token, after_seq=4)
    first = receive_until(bob_socket, lambda _frame: True)
    post_message(http, ada, chat_id, "live")

    assert first == [{"type": "resync", "after_seq": 4, "last_seq": 1005}]
    assert messages_in(receive_until(bob_socket, is_type("message")))[0]["seq"] == 1006


def test_after_seq_beyond_the_last_message_gets_a_resync_and_live_messages_still_come(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    post_message(http, ada, chat_id, "one")

    bob_socket = connect(chat_id, bob.token, after_seq=50)
    first = receive_until(bob_socket, lambda _frame: True)
    post_message(http, ada, chat_id, "two")

    assert first == [{"type": "resync", "after_seq": 50, "last_seq": 1}]
    assert messages_in(receive_until(bob_socket, is_type("message")))[0]["seq"] == 2


def test_sending_announces_all_read_when_the_sender_was_the_last_reader(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob, cy = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, ada, [bob, cy])
    post_message(http, bob, chat_id, "from bob")  # seq 1: Bob has read it by sending it
    post_read(http, cy, chat_id, 1)
    bob_socket = connect(chat_id, bob.token)

    post_message(http, ada, chat_id, "from ada")  # seq 2: Ada, the last reader of 1, now read it too

    frames = receive_until(bob_socket, is_type("read"))
    assert frames[-1] == {"type": "read", "chat_id": chat_id, "user_id": ada.id, "seq": 2, "all_read_seq": 1}


# Membership ---------------------------------------------------------------------------------------


def test_member_added_event_reaches_the_groups_sockets(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob, cy = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, ada, [bob])
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)

    assert http.post(f"/groups/{chat_id}/add_user/{cy.id}", headers=ada.headers).status_code == 200

    expected = {"type": "member_added", "chat_id": chat_id, "user_id": cy.id}
    for socket in (ada_socket, bob_socket):
        assert receive_until(socket, is_type("member_added")) == [expected]


def test_added_member_can_connect_and_receives_new_messages(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, cy = people("Ada", "Cy")
    chat_id = group_chat(http, ada, [])
    assert http.post(f"/groups/{chat_id}/add_user/{cy.id}", headers=ada.headers).status_code == 200

    cy_socket = connect(chat_id, cy.token)
    post_message(http, ada, chat_id, "welcome")

    assert messages_in(receive_until(cy_socket, is_type("message")))[0]["client_id"] == "welcome"


def test_removed_members_sockets_are_closed_with_4403_and_get_nothing_after_the_removal(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob, cy = people("Ada", "Bob", "Cy")
    chat_id = group_chat(http, ada, [bob, cy])
    ada_socket, cy_socket = connect(chat_id, ada.token), connect(chat_id, cy.token)
    bob_phone, bob_laptop = connect(chat_id, bob.token), connect(chat_id, bob.token)

    assert http.post(f"/groups/{chat_id}/remove_user/{bob.id}", headers=ada.headers).status_code == 200
    send_and_confirm(ada_socket, "after-removal")

    removed = {"type": "member_removed", "chat_id": chat_id, "user_id": bob.id}
    cy_frames = receive_until(cy_socket, is_message(client_id="after-removal"))
    assert [f["type"] for f in cy_frames] == ["member_removed", "message"]
    assert cy_frames[0] == removed
    for socket in (bob_phone, bob_laptop):
        assert receive_until_closed(socket) == ([removed], CLOSE_FORBIDDEN)


# Handshake ----------------------------------------------------------------------------------------


def _expired(account: Account) -> str:
    now = int(time.time())
    claims = {"sub": str(account.id), "iat": now - 7200, "exp": now - 3600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def _tampered(account: Account) -> str:
    header, payload, signature = account.token.split(".")
    return f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"


BAD_TOKENS: dict[str, Callable[[Account], str | None]] = {
    "missing": lambda _account: None,
    "garbage": lambda _account: "not-a-token",
    "expired": _expired,
    "tampered": _tampered,
    "other-secret": lambda account: jwt.encode(
        {"sub": str(account.id), "iat": int(time.time()), "exp": int(time.time()) + 3600},
        "another-secret-that-is-long-enough-for-hs256-000000",
        algorithm="HS256",
    ),
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_socket_without_a_valid_token_is_closed_with_4401(
    people: Any, http: httpx.Client, connect: Any, kind: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)

    socket = connect(chat_id, BAD_TOKENS[kind](ada))

    assert receive_until_closed(socket) == ([], CLOSE_UNAUTHORIZED)


def test_token_is_also_accepted_as_a_bearer_header(
    people: Any, live_server: LiveServer, http: httpx.Client
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)

    with open_socket(live_server.ws_url, chat_id, headers=ada.headers) as socket:
        assert send_and_confirm(socket, "via-header")["sender_id"] == ada.id


@pytest.mark.parametrize("whose", ["unknown-chat", "not-a-member"])
def test_socket_to_a_chat_the_user_is_not_in_is_closed_with_4403(
    people: Any, http: httpx.Client, connect: Any, whose: str
) -> None:
    ada, bob, eve = people("Ada", "Bob", "Eve")
    chat_id = private_chat(http, ada, bob)

    socket = connect(chat_id + 1_000_000 if whose == "unknown-chat" else chat_id, eve.token)

    assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


@pytest.mark.parametrize("after_seq", ["abc", "-1", "1.5", ""])
def test_bad_after_seq_is_closed_with_4400(
    people: Any, http: httpx.Client, connect: Any, after_seq: str
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)

    socket = connect(chat_id, ada.token, after_seq=after_seq)

    assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST)


def test_after_seq_with_a_non_ascii_digit_is_closed_with_4400(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)

    socket = connect(chat_id, ada.token, after_seq="\u00b2")

    assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST)


def test_token_in_the_query_string_never_reaches_the_log(
    people: Any, live_server: LiveServer, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)

    send_and_confirm(connect(chat_id, ada.token), "logged")
    with open_socket(live_server.ws_url, chat_id, headers=bob.headers) as socket:
        send_and_confirm(socket, "logged-too")

    wait_for(lambda: f"/ws/{chat_id}?token=[redacted]" in live_server.log())
    log = live_server.log()
    assert ada.token not in log
    assert bob.token not in log
    assert ada.token.split(".")[2] not in log  # not even the signature


# Bad frames and limits ----------------------------------------------------------------------------

BAD_FRAMES: dict[str, tuple[str, str, str | None]] = {
    # name: (raw frame, error code, client_id echoed)
    "not-json": ("hello", "invalid_json", None),
    "truncated-json": ('{"type": "send"', "invalid_json", None),
    "array": ("[1, 2]", "invalid_frame", None),
    "string": ('"send"', "invalid_frame", None),
    "null": ("null", "invalid_frame", None),
    "unknown-type": ('{"type": "shout", "client_id": "u1"}', "unknown_type", "u1"),
    "unknown-type-no-client-id": ('{"type": "shout"}', "unknown_type", None),
    "no-type": ('{"text": "hi"}', "invalid_frame", None),
    "empty-client-id": ('{"type": "send", "client_id": "", "text": "hi"}', "invalid_frame", ""),
    "long-client-id": (
        json.dumps({"type": "send", "client_id": "c" * 65, "text": "hi"}),
        "invalid_frame",
        "c" * 65,
    ),
    "missing-text": ('{"type": "send", "client_id": "t1"}', "invalid_frame", "t1"),
    "blank-text": ('{"type": "send", "client_id": "t2", "text": " \\n\\t "}', "invalid_frame", "t2"),
    "long-text": (
        json.dumps({"type": "send", "client_id": "t3", "text": "x" * 4097}),
        "invalid_frame",
        "t3",
    ),
    "long-text-after-trimming": (
        json.dumps({"type": "send", "client_id": "t4", "text": " " + "x" * 4097 + " "}),
        "invalid_frame",
        "t4",
    ),
    "negative-seq": ('{"type": "read", "seq": -1}', "invalid_frame", None),
    "string-seq": ('{"type": "read", "seq": "3"}', "invalid_frame", None),
    "float-seq": ('{"type": "read", "seq": 1.5}', "invalid_frame", None),
    "missing-seq": ('{"type": "read"}', "invalid_frame", None),
    "unknown-field": ('{"type": "typing", "extra": 1}', "invalid_frame", None),
}


@pytest.mark.parametrize("name", BAD_FRAMES)
def test_bad_frame_gets_an_error_and_the_socket_stays_open(
    people: Any, http: httpx.Client, connect: Any, database_url: str, name: str
) -> None:
    raw, code, client_id = BAD_FRAMES[name]
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)

    socket.send(raw)
    error = receive_until(socket, lambda _frame: True)[-1]

    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["detail"], str)
    assert error["detail"]
    assert error.get("client_id") == client_id
    assert send_and_confirm(socket, "after-error")["seq"] == 1
    assert [row.client_id for row in stored_messages(database_url, chat_id)] == ["after-error"]


def test_text_of_4096_characters_after_trimming_is_accepted(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)

    sent = send_and_confirm(socket, "longest", "  " + "x" * 4096 + "\n")

    assert sent["text"] == "x" * 4096


def test_sockets_are_not_compressed_even_when_the_client_offers_it(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)  # the client offers permessage-deflate by default

    assert socket.request is not None
    assert "permessage-deflate" in socket.request.headers.get("Sec-WebSocket-Extensions", "")
    assert socket.response is not None
    assert "Sec-WebSocket-Extensions" not in socket.response.headers


def test_frame_of_exactly_the_size_limit_is_read(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)
    frame = '{"type": "typing", "padding": "' + "x" * MAX_FRAME_BYTES
    frame = frame[: MAX_FRAME_BYTES - 2] + '"}'
    assert len(frame.encode()) == MAX_FRAME_BYTES

    socket.send(frame)

    assert receive_until(socket, is_type("error"))[-1]["code"] == "invalid_frame"
    send_and_confirm(socket, "still-open")


def test_frame_over_the_size_limit_closes_the_socket_with_1009(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)

    socket.send(json.dumps({"type": "send", "client_id": "big", "text": "x" * MAX_FRAME_BYTES}))

    assert receive_until_closed(socket) == ([], CLOSE_TOO_BIG)


def test_burst_of_50_frames_is_not_rate_limited(people: Any, http: httpx.Client, connect: Any) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)

    for _ in range(50):
        send_frame(ada_socket, type="typing")

    # A refused frame is answered with an error and never published: all 50 reaching Bob proves none was.
    frames = receive_count(bob_socket, is_type("typing"), 50)
    assert [f["type"] for f in frames] == ["typing"] * 50


def test_flooding_gets_rate_limited_errors_then_a_close_with_1008(
    people: Any, http: httpx.Client, connect: Any
) -> None:
    ada, bob = people("Ada", "Bob")
    chat_id = private_chat(http, ada, bob)
    socket = connect(chat_id, ada.token)

    for _ in range(400):
        try:
            send_frame(socket, type="typing")
        except ConnectionClosed:  # the close code is read below
            break
    frames, code = receive_until_closed(socket)

    assert frames
    assert {(f["type"], f["code"]) for f in frames} == {("error", "rate_limited")}
    assert code == CLOSE_POLICY
