"""Prometheus metrics: off by default; with ``WINDI_METRICS=true`` the counters move with the traffic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import free_port, start_server, stop_server, wait_for
from tests.wsclient import open_socket, send_and_confirm


def sample(scrape: str, name: str, **labels: str) -> float:
    """The value of one sample of the scrape (0 when it is not there)."""
    for line in scrape.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{key}="{value}"' in (match[1] or "") for key, value in labels.items()):
            return float(match[2])
    return 0.0


def test_metrics_are_off_by_default(client: TestClient[Any]) -> None:
    assert client.get("/metrics").status_code == 404


def test_the_counters_move_with_traffic(database_url: str, tmp_path: Path) -> None:
    server = start_server(database_url, tmp_path / "server.log", {"WINDI_METRICS": "true"})
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]
            api.login(ada.email, "not the password", expect=401)
            with open_socket(server.ws_url, chat_id, ada.token) as socket:
                send_and_confirm(socket, "metrics-1")
                api.send(bob, chat_id, "over rest")
                scrape = http.get("/metrics").text
            assert sample(scrape, "windi_open_sockets", kind="chat") == 1
            assert sample(scrape, "windi_messages_stored_total") == 2
            assert sample(scrape, "windi_requests_total", path="/login", status_code="401") == 1
            assert "windi_db_pool_in_use" in scrape
            assert sample(scrape, "windi_send_batch_size_count") >= 1
            assert sample(scrape, "windi_send_batch_size_sum") >= 2
            closed = wait_for(
                lambda: (
                    sample(text := http.get("/metrics").text, "windi_open_sockets", kind="chat") == 0 and text
                )
            )
            assert sample(closed, "windi_messages_stored_total") == 2
    finally:
        stop_server(server)


def test_metrics_on_a_port_of_their_own(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {"WINDI_METRICS": "true", "WINDI_METRICS_PORT": str(port)}
    server = start_server(database_url, tmp_path / "metrics-port.log", env)
    try:
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        assert "windi_open_sockets" in scrape
        with server.http() as http:
            assert http.get("/metrics").status_code == 404
    finally:
        stop_server(server)
