"""Connections that trickle their request headers in, or simply too many, cannot starve the server.

Each slow client sends the start of a request and then nothing; the server drops it once
``WINDI_HTTP_HEADER_TIMEOUT`` has passed, and reports the drops in one WARNING a minute at most.
Past the descriptor limit, uvicorn's event loop (uvloop) refuses new connections at once rather than
queueing them, so a normal client retries until a dropped slow connection has freed a descriptor.
Below that limit, ``WINDI_MAX_CONNECTIONS`` answers connections past it with an immediate 503.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.api import Api
from tests.conftest import LiveServer, start_server, stop_server, wait_for

PARTIAL_REQUEST = b"GET /health HTTP/1.1\r\nHost: windi\r\nX-Slow: "
HEADER_TIMEOUT = {"WINDI_HTTP_HEADER_TIMEOUT": "1"}


def slow_connection(server: LiveServer) -> socket.socket:
    """A connection that starts a request and never finishes its headers."""
    address = urlsplit(server.base_url)
    connection = socket.create_connection((address.hostname, address.port), timeout=10)
    connection.sendall(PARTIAL_REQUEST)
    connection.setblocking(False)
    return connection


def is_dropped(connection: socket.socket) -> bool:
    try:
        return connection.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset by the server's abort
        return True


@contextmanager
def slow_clients(server: LiveServer, count: int) -> Iterator[list[int]]:
    """``count`` slow connections kept open for the whole block: each one dropped is replaced."""
    connections = [slow_connection(server) for _ in range(count)]
    dropped: list[int] = []
    done = threading.Event()

    def replace_dropped() -> None:
        while not done.is_set():
            for index, connection in enumerate(connections):
                if is_dropped(connection):
                    connection.close()
                    dropped.append(index)
                    connections[index] = slow_connection(server)
            time.sleep(0.05)

    keeping = threading.Thread(target=replace_dropped)
    keeping.start()
    try:
        yield dropped
    finally:
        done.set()
        keeping.join()
        for connection in connections:
            connection.close()


def test_a_request_whose_headers_stop_arriving_is_dropped_after_the_header_timeout(
    tmp_path: Path, sqlite_url: str
) -> None:
    server = start_server(sqlite_url, tmp_path / "server.log", HEADER_TIMEOUT)
    try:
        connections = [slow_connection(server) for _ in range(20)]
        ports = {connection.getsockname()[1] for connection in connections}
        wait_for(lambda: ports <= server.open_connections())
        wait_for(lambda: all(is_dropped(connection) for connection in connections))
        assert not ports & server.open_connections()
        with server.http() as http:
            assert http.get("/health").status_code == 200
        for connection in connections:
            connection.close()
    finally:
        stop_server(server)
    warnings = [
        line for line in server.log().splitlines() if "request headers did not arrive within 1s" in line
    ]
    assert len(warnings) == 1  # twenty drops, one line: the next report waits a minute
    assert "WARNING" in warnings[0]


def log_in_on_a_new_connection(server: LiveServer, email: str) -> bool:
    """One login as a new client would do it: a connection of its own. False if it did not get through."""
    try:
        with server.http() as http:
            response = Api(http).login(email, expect=None)
    except httpx.TransportError:  # refused or reset while the server had no descriptor to spare
        return False
    assert response.status_code in (200, 503), response.text  # 503: past the connection cap; retry
    return response.status_code == 200 and "access_token" in response.json()


def descriptors(server: LiveServer) -> int:
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def logins_get_through_an_attack(server: LiveServer, attack_in_force: Callable[[], bool]) -> None:
    """Five logins, each retried until it gets through, while 200 slow clients keep connecting."""
    with server.http() as http:
        ada = Api(http).account("Ada")
    with slow_clients(server, 200):
        wait_for(attack_in_force)
        for _ in range(5):
            wait_for(lambda: log_in_on_a_new_connection(server, ada.email), timeout=30)


def test_login_keeps_working_while_slow_clients_hold_more_connections_than_the_descriptor_limit(
    tmp_path: Path, pg_database_url: str
) -> None:
    # No connection cap below the descriptor limit here (by default there is one): the header timeout
    # alone must keep the server reachable.
    uncapped = {**HEADER_TIMEOUT, "WINDI_MAX_CONNECTIONS": "100000"}
    server = start_server(
        pg_database_url, tmp_path / "server.log", uncapped, soft_open_files=128, hard_open_files=128
    )
    try:
        # Connections arriving while every descriptor is taken are refused, so a client retries; the
        # header timeout frees descriptors every second, and its retries get through.
        logins_get_through_an_attack(server, lambda: descriptors(server) >= 120)  # (nearly) all taken
    finally:
        stop_server(server)
    log = server.log()
    assert "Open files limit: soft 128 (was 128), hard 128" in log
    assert "request headers did not arrive within 1s" in log


def test_by_default_the_connection_cap_refuses_slow_clients_before_the_descriptors_run_out(
    tmp_path: Path, pg_database_url: str
) -> None:
    server = start_server(
        pg_database_url, tmp_path / "server.log", HEADER_TIMEOUT, soft_open_files=128, hard_open_files=128
    )
    try:

        def refused_in_time() -> bool:
            if "the most allowed" not in server.log():
                return False
            assert descriptors(server) < 128
            return True

        logins_get_through_an_attack(server, refused_in_time)
    finally:
        stop_server(server)
    assert "At most 28 open connections" in server.log()


def test_connections_past_the_cap_get_an_immediate_503_and_one_warning(
    tmp_path: Path, sqlite_url: str
) -> None:
    limits = {"WINDI_MAX_CONNECTIONS": "5", "WINDI_HTTP_HEADER_TIMEOUT": "600"}
    server = start_server(sqlite_url, tmp_path / "server.log", limits)
    try:
        connections = [slow_connection(server) for _ in range(5)]
        ports = {connection.getsockname()[1] for connection in connections}
        wait_for(lambda: ports <= server.open_connections())
        for _ in range(3):
            response = httpx.get(f"{server.base_url}/health", timeout=10)
            assert (response.status_code, response.headers["Retry-After"]) == (503, "3")
        for connection in connections:
            connection.close()
        wait_for(lambda: httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200)
    finally:
        stop_server(server)
    log = server.log()
    assert "At most 5 open connections" in log
    warnings = [line for line in log.splitlines() if "5 connections open, the most allowed" in line]
    assert len(warnings) == 1  # three refusals, one line
    assert "WARNING" in warnings[0]
