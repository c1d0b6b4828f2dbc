"""One person cannot take more than a fair share: group size, sockets, sends and typing are capped.

A real server on PostgreSQL, with every limit set small through its setting, and each test gone past it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.api import Account, Api
from tests.conftest import LiveServer, fetch, start_server, stop_server, wait_for
from tests.wsclient import (
    is_ack,
    is_message,
    is_type,
    open_socket,
    receive_count,
    receive_until,
    receive_until_closed,
    send_frame,
)

MAX_MEMBERS = 4
MAX_SOCKETS = 3
SEND_BURST = 3
CLOSE_POLICY = 1008
CLOSE_TOO_MANY = 4429


@pytest.fixture(scope="module")
def server(shared_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    limits = {
        "WINDI_MAX_GROUP_MEMBERS": str(MAX_MEMBERS),
        "WINDI_WS_MAX_SOCKETS_PER_USER": str(MAX_SOCKETS),
        "WINDI_SEND_RATE": "0.01",  # nothing refills within a test
        "WINDI_SEND_BURST": str(SEND_BURST),
        "WINDI_TYPING_INTERVAL": "600",
    }
    server = start_server(shared_postgres_url, tmp_path_factory.mktemp("fair") / "server.log", limits)
    yield server
    stop_server(server)


@pytest.fixture
def rest(server: LiveServer) -> Iterator[Api]:
    with server.http() as http:
        yield Api(http)


def member_count(database_url: str, chat_id: int) -> int:
    rows = fetch(database_url, "SELECT count(*) FROM chat_members WHERE chat_id = :chat_id", chat_id=chat_id)
    return int(rows[0][0])


# Groups -----------------------------------------------------------------------------------------------


def test_a_group_created_past_the_cap_is_full(rest: Api) -> None:
    owner, *others = rest.people("Owner", "A", "B", "C", "D")

    refused = rest.group(owner, "Too big", others, expect=409)

    assert refused["detail"] == "group is full"
    assert len(rest.group(owner, "Just right", others[: MAX_MEMBERS - 1])["members"]) == MAX_MEMBERS


def test_adding_a_member_to_a_full_group_is_refused(rest: Api, shared_postgres_url: str) -> None:
    owner, *others, late = rest.people("Owner", "A", "B", "C", "Late")
    group = rest.group(owner, "Full", others)

    assert rest.add_member(owner, group["id"], late, expect=409)["detail"] == "group is full"
    assert member_count(shared_postgres_url, group["id"]) == MAX_MEMBERS


def _race_to_the_cap(server: LiveServer, database_url: str) -> None:
    with server.http() as http:
        rest = Api(http)
        owner, *candidates = rest.people("Owner", *(f"Candidate{i}" for i in range(8)))
        group_id = rest.group(owner, "Race", [])["id"]

    def add(person: Account) -> int:
        with server.http() as http:
            response = Api(http).add_member(owner, group_id, person, expect=None)
        assert response.status_code in (200, 409), response.text
        if response.status_code == 409:
            assert response.json()["detail"] == "group is full"
        return int(response.status_code)

    with ThreadPoolExecutor(max_workers=len(candidates)) as pool:
        statuses = list(pool.map(add, candidates))

    assert sorted(statuses) == [200] * (MAX_MEMBERS - 1) + [409] * (len(candidates) - MAX_MEMBERS + 1)
    assert member_count(database_url, group_id) == MAX_MEMBERS


def test_concurrent_adds_stop_exactly_at_the_cap(server: LiveServer, shared_postgres_url: str) -> None:
    _race_to_the_cap(server, shared_postgres_url)


def test_concurrent_adds_stop_exactly_at_the_cap_on_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    # SQLite has no row locks: its changes of one group run one after another by its write lock.
    limits = {"WINDI_MAX_GROUP_MEMBERS": str(MAX_MEMBERS)}
    server = start_server(sqlite_url, tmp_path / "server.log", limits)
    try:
        _race_to_the_cap(server, sqlite_url)
    finally:
        stop_server(server)


# Sockets ----------------------------------------------------------------------------------------------


def test_one_socket_past_the_cap_is_closed_with_4429(server: LiveServer, rest: Api) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    with ExitStack() as opened:
        sockets = [
            opened.enter_context(open_socket(server.ws_url, chat_id, ada.token)) for _ in range(MAX_SOCKETS)
        ]
        with open_socket(server.ws_url, chat_id, ada.token) as extra:
            frames, code = receive_until_closed(extra)
        assert (frames, code) == ([], CLOSE_TOO_MANY)
        assert extra.close_reason == "too many connections"

        # Someone else is not held back, and the sockets within the cap still work.
        with open_socket(server.ws_url, chat_id, bob.token) as bobs:
            send_frame(sockets[0], type="send", client_id="within", text="hi")
            receive_until(bobs, is_message(client_id="within"))

        sockets[0].close()

        # The closed socket's place is free again once the server has seen it go.
        def reopened() -> bool:
            socket = opened.enter_context(open_socket(server.ws_url, chat_id, ada.token))
            try:
                send_frame(socket, type="typing")
                socket.recv(timeout=0.5)
            except ConnectionClosed:
                return False
            except TimeoutError:
                return True  # open, and quiet: it was admitted
            return True

        wait_for(reopened, timeout=10)


# Sends ------------------------------------------------------------------------------------------------


def test_rest_sends_past_the_burst_get_429_with_retry_after(rest: Api, shared_postgres_url: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    for index in range(SEND_BURST):
        rest.send(ada, chat_id, f"hello {index}")

    refused = rest.call(
        "POST",
        f"/chats/{chat_id}/messages",
        ada,
        json={"text": "one too many", "client_id": "x"},
        expect=None,
    )

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["detail"] == "Too many messages; slow down"
    rest.send(bob, chat_id, "Bob has his own allowance")
    stored = fetch(
        shared_postgres_url, "SELECT count(*) FROM messages WHERE chat_id = :chat_id", chat_id=chat_id
    )
    assert stored[0][0] == SEND_BURST + 1


def test_the_send_limit_is_shared_by_rest_and_sockets(server: LiveServer, rest: Api) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    for index in range(SEND_BURST):
        rest.send(ada, chat_id, f"hello {index}")

    with open_socket(server.ws_url, chat_id, ada.token) as socket:
        send_frame(socket, type="send", client_id="over", text="one too many")
        [error] = receive_until(socket, is_type("error"))

    assert (error["code"], error["client_id"]) == ("rate_limited", "over")


def test_read_markers_are_limited_per_person_across_rest_and_sockets(server: LiveServer, rest: Api) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, chat_id, "read me")
    for _ in range(SEND_BURST - 1):
        rest.read(bob, chat_id, 1)

    with (
        open_socket(server.ws_url, chat_id, bob.token) as first,
        open_socket(server.ws_url, chat_id, bob.token) as second,
    ):
        send_frame(first, type="read", seq=1)  # the last of the allowance
        send_frame(second, type="read", seq=1)  # another socket of the same person: past it
        [error] = [f for f in receive_until(second, is_type("error")) if f["type"] == "error"]
        assert error["code"] == "rate_limited"
        assert error["detail"] == "Too many read markers; slow down"

    refused = rest.read(bob, chat_id, 1, expect=429)
    assert refused["detail"] == "Too many read markers; slow down"
    rest.read(ada, chat_id, 1)  # Ada has her own allowance


def test_a_socket_that_keeps_sending_past_the_limit_is_closed_with_1008(
    server: LiveServer, rest: Api, shared_postgres_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    with open_socket(server.ws_url, chat_id, ada.token) as socket:
        for index in range(10 * SEND_BURST):
            try:
                send_frame(socket, type="send", client_id=f"flood-{index}", text="flood")
            except ConnectionClosed:
                break
        frames, code = receive_until_closed(socket)

    assert code == CLOSE_POLICY
    assert socket.close_reason == "too many messages"
    errors = [f for f in frames if f["type"] == "error"]
    # Told at least this often before the close (a slow machine may refill some patience meanwhile).
    assert len(errors) >= SEND_BURST
    assert {e["code"] for e in errors} == {"rate_limited"}
    acks = [f for f in frames if f["type"] == "ack"]
    assert [a["client_id"] for a in acks] == [f"flood-{i}" for i in range(SEND_BURST)]
    stored = fetch(
        shared_postgres_url, "SELECT count(*) FROM messages WHERE chat_id = :chat_id", chat_id=chat_id
    )
    assert stored[0][0] == SEND_BURST


def test_edits_and_reactions_over_a_socket_draw_on_the_send_limit(server: LiveServer, rest: Api) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, chat_id, "to change")  # one of the burst

    with open_socket(server.ws_url, chat_id, ada.token) as socket:
        send_frame(socket, type="edit", seq=1, text="changed", client_id="edit")
        send_frame(socket, type="react", seq=1, emoji="👍", on=True, client_id="react")
        send_frame(socket, type="delete", seq=1, client_id="delete")
        answers = [
            f
            for f in receive_count(socket, lambda f: f["type"] in ("ack", "error"), 3)
            if f["type"] in ("ack", "error")
        ]

    assert [(f["type"], f["client_id"]) for f in answers] == [
        ("ack", "edit"),
        ("ack", "react"),
        ("error", "delete"),
    ]
    assert answers[2]["code"] == "rate_limited"
    assert rest.history(bob, chat_id)[0]["deleted"] is False
    rest.edit(ada, chat_id, 1, "again", expect=429)


def test_a_socket_that_keeps_changing_messages_past_the_limit_is_closed_with_1008(
    server: LiveServer, rest: Api
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, chat_id, "to change")
    with open_socket(server.ws_url, chat_id, ada.token) as socket:
        for index in range(10 * SEND_BURST):
            try:
                send_frame(socket, type="react", seq=1, emoji="👍", on=index % 2 == 0, client_id=f"r-{index}")
            except ConnectionClosed:
                break
        frames, code = receive_until_closed(socket)

    assert (code, socket.close_reason) == (CLOSE_POLICY, "too many messages")
    assert {f["code"] for f in frames if f["type"] == "error"} == {"rate_limited"}


# Typing -----------------------------------------------------------------------------------------------


def test_typing_from_many_sockets_is_forwarded_once_per_interval(server: LiveServer, rest: Api) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    with (
        open_socket(server.ws_url, chat_id, bob.token) as bobs,
        open_socket(server.ws_url, chat_id, ada.token) as phone,
        open_socket(server.ws_url, chat_id, ada.token) as laptop,
    ):
        for socket, name in ((phone, "phone"), (laptop, "laptop")):
            for _ in range(10):
                send_frame(socket, type="typing")
            # Frames of one socket are handled in order: its ack comes after its typing frames.
            send_frame(socket, type="send", client_id=name, text="done typing")
            receive_until(socket, is_ack(name))

        frames = receive_count(bobs, is_message(), 2)

    typing = [f for f in frames if f["type"] == "typing"]
    assert typing == [{"type": "typing", "chat_id": chat_id, "user_id": ada.id}]
