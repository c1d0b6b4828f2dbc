"""A client that stops reading cannot grow the server's memory: its socket is closed with 1013.

The paused client shrinks its receive buffer and stops reading after one queued frame, so the server's
sends back up within a few hundred kilobytes. Whether the server notices through its send timeout or
through the socket's backlog, the client gets 1013 and then catches up with ``after_seq``.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.api import Account, Api
from tests.conftest import LiveServer, start_server, stop_server, wait_for
from tests.wsclient import (
    CLOSED_WITHOUT_CODE,
    Frame,
    is_ack,
    is_message,
    open_socket,
    receive_count,
    receive_until,
    receive_until_closed,
    send_frame,
)

CLOSE_TRY_AGAIN = 1013
BIG_TEXT = "\N{GRINNING FACE}" * 4096  # 16 kB of UTF-8 per frame (these sockets are not compressed)
MESSAGES = 330


def paused_socket(
    server: LiveServer, chat_id: int, token: str, after_seq: int | None = None
) -> ClientConnection:
    """A connection whose client reads nothing until ``recv`` is called, with a tiny receive buffer."""
    address = urlsplit(server.ws_url)
    raw = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
    raw.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
    raw.connect((address.hostname, address.port))
    query = {"token": token} if after_seq is None else {"token": token, "after_seq": str(after_seq)}
    url = f"{server.ws_url}/ws/{chat_id}?{urlencode(query)}"
    return connect(url, sock=raw, max_queue=1, compression=None, open_timeout=10)


@pytest.fixture
def slow_server(postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    backlog, send_timeout = request.param
    server = start_server(
        postgres_url,
        tmp_path / "server.log",
        {
            "WINDI_WS_SOCKET_BACKLOG": str(backlog),
            "WINDI_WS_SEND_TIMEOUT": str(send_timeout),
            "WINDI_WS_FRAMES_PER_SECOND": "10000",
            "WINDI_WS_CLOSE_TIMEOUT": "2",
        },
    )
    yield server
    stop_server(server)


def _pair(server: LiveServer) -> tuple[Account, Account, int]:
    """Ada and Bob, new to the shared database, and their private chat."""
    with server.http() as http:
        api = Api(http)
        ada, bob = api.people("Ada", "Bob")
        return ada, bob, api.private_chat(ada, bob, expect=(200, 201))["id"]


def _send_many(server: LiveServer, sender: Account, chat_id: int) -> None:
    """Send ``MESSAGES`` big messages, ten at a time (one batch: ten events at once on every socket of
    the chat, within the backlog), reading everything that comes back."""
    with open_socket(server.ws_url, chat_id, sender.token) as sending:
        for start in range(0, MESSAGES, 10):
            for index in range(start, min(start + 10, MESSAGES)):
                send_frame(sending, type="send", client_id=f"big-{index}", text=BIG_TEXT)
            receive_until(sending, is_ack(f"big-{index}"), timeout=30)


def _catch_up_after_close(
    server: LiveServer, paused: ClientConnection, chat_id: int, token: str, codes: set[int]
) -> None:
    """Read what the paused socket got before its close, then reconnect: every message exactly once."""
    frames, code = receive_until_closed(paused, timeout=60)
    assert code in codes
    got = [f["message"]["seq"] for f in frames if f["type"] == "message"]
    assert len(got) < MESSAGES, "the socket was closed before it was sent everything"
    assert got == list(range(1, len(got) + 1))
    with open_socket(server.ws_url, chat_id, token, after_seq=len(got)) as again:
        rest = receive_count(again, is_message(), MESSAGES - len(got), timeout=30)
    assert [f["message"]["seq"] for f in rest if f["type"] == "message"] == list(
        range(len(got) + 1, MESSAGES + 1)
    )


def _keeps_up(fast: ClientConnection) -> None:
    frames: list[Frame] = receive_count(fast, is_message(), MESSAGES, timeout=60)
    assert [f["message"]["seq"] for f in frames if f["type"] == "message"] == list(range(1, MESSAGES + 1))


# A send timeout of 3 s: the fast device is read by this test process, which a loaded machine (two
# test workers on two cores) can stall for over a second; the paused one is closed all the same. The
# fast device's client reads every frame as it comes (``max_queue=None``), while the test is still
# sending: with a bounded queue it would stop reading, and be closed as too slow itself, whenever the
# sends took longer than the timeout.
@pytest.mark.parametrize("slow_server", [(100_000, 3)], indirect=True)
def test_a_client_that_stops_reading_is_closed_after_the_send_timeout(slow_server: LiveServer) -> None:
    ada, bob, chat_id = _pair(slow_server)
    with (
        paused_socket(slow_server, chat_id, bob.token) as paused,
        open_socket(slow_server.ws_url, chat_id, bob.token, max_queue=None) as fast,
    ):
        _send_many(slow_server, ada, chat_id)
        _keeps_up(fast)  # another device of the same user is not held back by the slow one

        # The server closes the paused socket while its client still reads nothing.
        wait_for(lambda: "too slow to receive" in slow_server.log(), timeout=30)
        # The close frame reaches the client only if its buffers had room for it (see docs/protocol.md).
        _catch_up_after_close(slow_server, paused, chat_id, bob.token, {CLOSE_TRY_AGAIN, CLOSED_WITHOUT_CODE})


@pytest.mark.parametrize("slow_server", [(20, 600)], indirect=True)
def test_a_client_that_falls_too_far_behind_is_closed_when_it_reads_again(slow_server: LiveServer) -> None:
    ada, bob, chat_id = _pair(slow_server)
    with paused_socket(slow_server, chat_id, bob.token) as paused:
        _send_many(slow_server, ada, chat_id)

        # Reading again unblocks the server's pending send; the backlog behind it is over the limit.
        _catch_up_after_close(slow_server, paused, chat_id, bob.token, {CLOSE_TRY_AGAIN})
        assert "fell too far behind" in slow_server.log()


@pytest.mark.parametrize("slow_server", [(100_000, 1)], indirect=True)
def test_a_closed_client_that_reads_nothing_loses_its_connection_after_the_close_timeout(
    slow_server: LiveServer,
) -> None:
    ada, bob, chat_id = _pair(slow_server)
    with paused_socket(slow_server, chat_id, bob.token) as paused:
        paused_port = paused.socket.getsockname()[1]
        assert paused_port in slow_server.open_connections()
        _send_many(slow_server, ada, chat_id)

        # The server gives up on the paused client, whose buffers are full: the close frame cannot
        # reach it, and once the close timeout has passed the server drops the connection itself.
        wait_for(lambda: "too slow to receive" in slow_server.log(), timeout=30)
        wait_for(lambda: paused_port not in slow_server.open_connections(), timeout=30)
    assert "did not complete the close within 2s" in slow_server.log()


@pytest.mark.parametrize("slow_server", [(100_000, 1)], indirect=True)
def test_a_catch_up_the_client_does_not_read_is_closed_and_its_connection_dropped(
    slow_server: LiveServer,
) -> None:
    ada, bob, chat_id = _pair(slow_server)
    _send_many(slow_server, ada, chat_id)  # stored while Bob is away: his catch-up replays them

    with paused_socket(slow_server, chat_id, bob.token, after_seq=0) as paused:
        paused_port = paused.socket.getsockname()[1]

        # The replay waits for each page to be taken, so it stops at the send timeout, not at the end.
        wait_for(lambda: "too slow to receive" in slow_server.log(), timeout=30)
        wait_for(lambda: paused_port not in slow_server.open_connections(), timeout=30)
        # The server let go of it: the socket's loops ended and their page with them.
        closed = f"Socket closed: chat_id={chat_id} user_id={bob.id}"
        wait_for(lambda: closed in slow_server.log(), timeout=30)
        _catch_up_after_close(slow_server, paused, chat_id, bob.token, {CLOSE_TRY_AGAIN, CLOSED_WITHOUT_CODE})
