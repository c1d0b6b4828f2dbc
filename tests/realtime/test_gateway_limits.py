"""The gateway's limits, each set small and gone past: sync replays, sockets per person, frames, backlog."""

from __future__ import annotations

import contextlib
import socket as stdlib_socket
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.api import Account, Api
from tests.conftest import LiveServer, start_server, stop_server
from tests.wsclient import (
    is_type,
    open_gateway,
    open_socket,
    receive_until,
    receive_until_closed,
    send_frame,
    send_sync,
)

SYNC_LIMIT = 3
SOCKETS_PER_PERSON = 2
BACKLOG = 20
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_AGAIN, CLOSE_TOO_MANY = 1008, 1009, 1013, 4429
BIG_TEXT = "\N{GRINNING FACE}" * 4096  # 16 kB of UTF-8 per frame
MESSAGES = 330


@pytest.fixture(scope="module")
def small_server(shared_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(
        shared_database_url,
        tmp_path_factory.mktemp("gateway-limits") / "server.log",
        {
            "WINDI_SYNC_LIMIT": str(SYNC_LIMIT),
            "WINDI_WS_MAX_SOCKETS_PER_USER": str(SOCKETS_PER_PERSON),
            "WINDI_WS_SOCKET_BACKLOG": str(BACKLOG),
            "WINDI_WS_SEND_TIMEOUT": "600",
            "WINDI_WS_FRAMES_PER_SECOND": "1",
        },
    )
    yield server
    stop_server(server)


@pytest.fixture
def api(small_server: LiveServer) -> Iterator[Api]:
    with small_server.http() as http:
        yield Api(http)


def _pair(api: Api) -> tuple[Account, Account, int]:
    ada, bob = api.people("Ada", "Bob")
    return ada, bob, api.private_chat(ada, bob)["id"]


def test_more_missed_messages_than_the_sync_limit_get_a_resync_for_that_chat(
    api: Api, small_server: LiveServer
) -> None:
    ada, bob, chat_id = _pair(api)
    for index in range(SYNC_LIMIT + 2):
        api.send(ada, chat_id, f"missed {index}", f"missed-{index}")

    with open_gateway(small_server.ws_url, bob.token, max_queue=None) as gateway:
        send_sync(gateway, {chat_id: 0})
        resync = receive_until(gateway, is_type("resync"))[-1]
    assert resync == {"type": "resync", "after_seq": 0, "last_seq": SYNC_LIMIT + 2, "chat_id": chat_id}

    with open_gateway(small_server.ws_url, bob.token, max_queue=None) as gateway:
        send_sync(gateway, {chat_id: 2})
        frames = receive_until(gateway, lambda f: f.get("message", {}).get("seq") == SYNC_LIMIT + 2)
    assert [f["message"]["seq"] for f in frames if f["type"] == "message"] == [3, 4, 5]


def test_gateways_count_with_chat_sockets_against_the_per_person_cap(
    api: Api, small_server: LiveServer
) -> None:
    _ada, bob, chat_id = _pair(api)
    with (
        open_socket(small_server.ws_url, chat_id, bob.token),
        open_gateway(small_server.ws_url, bob.token) as gateway,
    ):
        send_sync(gateway, {})
        with open_gateway(small_server.ws_url, bob.token) as refused:
            assert receive_until_closed(refused)[1] == CLOSE_TOO_MANY


def test_a_frame_over_the_size_limit_closes_the_gateway_with_1009(api: Api, small_server: LiveServer) -> None:
    (bob,) = api.people("Bob")
    with open_gateway(small_server.ws_url, bob.token) as gateway:
        send_sync(gateway, {})
        gateway.send("x" * 70_000)
        assert receive_until_closed(gateway)[1] == CLOSE_TOO_BIG


def test_flooding_a_gateway_gets_rate_limited_errors_then_a_close(api: Api, small_server: LiveServer) -> None:
    _ada, bob, chat_id = _pair(api)
    with open_gateway(small_server.ws_url, bob.token, max_queue=None) as gateway:
        send_sync(gateway, {chat_id: 0})
        # Frames that publish nothing (each an error: no chat named), so no event backlog builds up.
        for _ in range(60):  # past the burst of 50
            send_frame(gateway, type="typing")
        frames = receive_until(gateway, lambda f: f.get("code") == "rate_limited")
        assert {f["code"] for f in frames if f["type"] == "error"} == {"invalid_frame", "rate_limited"}
        with contextlib.suppress(ConnectionClosed):  # closed while the flood is still being sent
            for _ in range(100):
                send_frame(gateway, type="typing")
        assert receive_until_closed(gateway)[1] == CLOSE_POLICY


def _paused_gateway(server: LiveServer, token: str) -> ClientConnection:
    """A gateway whose client reads nothing until ``recv`` is called, with a tiny receive buffer."""
    address = urlsplit(server.ws_url)
    raw = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    raw.connect((address.hostname, address.port))
    url = f"{server.ws_url}/ws?{urlencode({'token': token})}"
    return connect(url, sock=raw, max_queue=1, compression=None, open_timeout=10)


def test_a_gateway_that_falls_too_far_behind_is_closed_when_it_reads_again(
    api: Api, small_server: LiveServer
) -> None:
    ada, bob, chat_id = _pair(api)
    with _paused_gateway(small_server, bob.token) as paused:
        send_sync(paused, {chat_id: 0})
        for index in range(MESSAGES):  # more than the connection's buffers hold, and the backlog
            api.send(ada, chat_id, BIG_TEXT, f"big-{index}")
        frames, code = receive_until_closed(paused, timeout=60)
    assert code == CLOSE_TRY_AGAIN
    assert "fell too far behind" in small_server.log()
    got = [f["message"]["seq"] for f in frames if f["type"] == "message"]
    assert got == list(range(1, len(got) + 1))
    assert len(got) < MESSAGES
