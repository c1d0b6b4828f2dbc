"""Production behaviour against real server processes: shutdown, start-up, and a database that goes away."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api import Account, Api
from tests.conftest import TEST_SECRET, LiveServer, fetch, free_port, start_server, stop_server, wait_for
from tests.pg_cluster import OwnPostgres


@contextmanager
def connect_chat(server: LiveServer, api: Api) -> Iterator[tuple[Any, Account, int]]:
    """Register two people, open their private chat and connect the first one's socket."""
    ada, bob = api.account("Ada"), api.account("Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    with connect(f"{server.ws_url}/ws/{chat_id}?token={ada.token}", open_timeout=10) as socket:
        yield socket, ada, chat_id


def receive_json(socket: Any) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=10))


def test_sigterm_closes_sockets_with_1001_and_keeps_acknowledged_messages(
    pg_database_url: str, tmp_path: Path
) -> None:
    server = start_server(pg_database_url, tmp_path / "server.log", {"WINDI_ENV": "production"})
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.account("Ada"), api.account("Bob")
            chat_id = api.private_chat(ada, bob)["id"]
        with connect(f"{server.ws_url}/ws/{chat_id}?token={ada.token}", open_timeout=10) as socket:
            socket.send(json.dumps({"type": "send", "client_id": "before-stop", "text": "kept"}))
            frames = [receive_json(socket), receive_json(socket)]
            assert {f["type"] for f in frames} == {"ack", "message"}
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
        wait_for(lambda: server.process.poll() is not None, timeout=30)
    finally:
        stop_server(server)
    assert fetch(pg_database_url, "SELECT text FROM messages WHERE client_id = 'before-stop'") == [("kept",)]
    log = server.log()
    assert "Traceback" not in log
    # Production logs are JSON lines.
    app_lines = [line for line in log.splitlines() if line.startswith("{")]
    assert app_lines
    assert all(json.loads(line)["level"] for line in app_lines)


def test_run_raises_the_open_files_limit_to_the_hard_limit_and_logs_both(
    pg_database_url: str, tmp_path: Path
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > 256, "the test needs a hard limit above the soft one it starts the server with"
    server = start_server(pg_database_url, tmp_path / "server.log", soft_open_files=256)
    try:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        [open_files] = [
            line.split()[3:5] for line in limits.splitlines() if line.startswith("Max open files")
        ]
        assert open_files == [str(hard), str(hard)]
    finally:
        stop_server(server)
    assert f"Open files limit: soft {hard} (was 256), hard {hard}" in server.log()


def test_server_gives_up_on_an_unreachable_database_with_a_clear_message(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    env = {
        **os.environ,
        "WINDI_DATABASE_URL": url,
        "WINDI_JWT_SECRET": TEST_SECRET,
        "WINDI_DB_STARTUP_TIMEOUT": "2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "windi_chat.cli", "run", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Database not reachable (attempt 1" in result.stderr
    assert "Database not reachable (attempt 2" in result.stderr
    assert "did not answer within 2s" in result.stderr


def test_server_waits_for_a_database_that_starts_later(own_postgres: OwnPostgres, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    env = {**os.environ, "WINDI_DATABASE_URL": own_postgres.url, "WINDI_JWT_SECRET": TEST_SECRET}
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "windi_chat.cli", "run", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "Database not reachable (attempt 2" in log_path.read_text(), timeout=30)
        own_postgres.start()

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Database reachable after" in log_path.read_text()


def test_database_outage_gives_503_and_unavailable_then_recovers(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    own_postgres.start()
    server = start_server(own_postgres.url, tmp_path / "server.log")
    try:
        with server.http() as http, connect_chat(server, api := Api(http)) as (socket, ada, chat_id):
            own_postgres.stop()
            assert http.get("/health").status_code == 503
            response = http.get("/users/me", headers=ada.headers)
            assert response.status_code == 503
            assert "unavailable" in response.json()["detail"]
            api.history(ada, chat_id, expect=503)

            socket.send(json.dumps({"type": "send", "client_id": "during-outage", "text": "hello?"}))
            error = receive_json(socket)
            assert error == {
                "type": "error",
                "code": "unavailable",
                "detail": error["detail"],
                "client_id": "during-outage",
            }

            own_postgres.start()
            wait_for(lambda: http.get("/health").status_code == 200, timeout=30)
            assert http.get("/users/me", headers=ada.headers).status_code == 200
            socket.send(json.dumps({"type": "send", "client_id": "during-outage", "text": "hello?"}))
            frames = [receive_json(socket), receive_json(socket)]
            assert {f["type"] for f in frames} == {"ack", "message"}
            assert api.history(ada, chat_id)[0]["text"] == "hello?"
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()
