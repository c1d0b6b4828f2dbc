"""Prometheus metrics: off by default; with ``WINDI_METRICS=true`` the counters move with the traffic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import free_port, start_server, stop_server, wait_for
from tests.redis_server import RedisServer
from tests.wsclient import open_socket, receive_until, send_and_confirm, send_frame
from windi_chat.metrics import DELIVERED, count_delivery


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
                receive_until(socket, lambda frame: frame.get("message", {}).get("text") == "over rest")
                scrape = http.get("/metrics").text
            assert sample(scrape, "windi_open_sockets", kind="chat") == 1
            assert sample(scrape, "windi_messages_stored_total") == 2
            assert sample(scrape, "windi_requests_total", path="/login", status_code="401") == 1
            assert "windi_db_pool_in_use" in scrape
            assert sample(scrape, "windi_send_batch_size_count") >= 1
            assert sample(scrape, "windi_send_batch_size_sum") >= 2
            assert sample(scrape, "windi_login_failures_total") == 1
            assert sample(scrape, "windi_send_latency_seconds_count", transport="socket") == 1
            assert sample(scrape, "windi_send_latency_seconds_count", transport="rest") == 1
            # Ada's socket had her own message and Bob's, each as an event of kind message.
            assert sample(scrape, "windi_deliveries_total", kind="message") == 2
            assert sample(scrape, "windi_delivery_degraded") == 0
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


def test_rate_limit_refusals_are_counted_by_kind(database_url: str, tmp_path: Path) -> None:
    env = {
        "WINDI_METRICS": "true",
        "WINDI_SEND_RATE": "0.001",
        "WINDI_SEND_BURST": "1",
        "WINDI_WS_FRAMES_PER_SECOND": "0.001",
        "WINDI_LOGIN_MAX_FAILURES": "1",
        "WINDI_AUTH_RATE_LIMIT": "6",  # a minute, per address: the six calls to /register and /login below
    }
    server = start_server(database_url, tmp_path / "limits.log", env)
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]
            api.send(ada, chat_id, "first")
            api.send(ada, chat_id, "one too many", expect=429)
            api.read(ada, chat_id, 1)
            api.read(ada, chat_id, 1, expect=429)  # read markers have an allowance of their own
            api.login(bob.email, "not the password", expect=401)
            api.login(bob.email, "not the password", expect=429)  # the account's lock
            api.register("Cy", expect=429)  # the address's limit
            with open_socket(server.ws_url, chat_id, bob.token) as socket:
                for _ in range(51):  # one past the burst of 50 frames
                    send_frame(socket, type="typing")
                receive_until(socket, lambda frame: frame.get("code") == "rate_limited")
            scrape = http.get("/metrics").text
        assert sample(scrape, "windi_rate_limit_refusals_total", kind="sends") == 1
        assert sample(scrape, "windi_rate_limit_refusals_total", kind="reads") == 1
        assert sample(scrape, "windi_rate_limit_refusals_total", kind="login") == 1
        assert sample(scrape, "windi_rate_limit_refusals_total", kind="register") == 1
        assert sample(scrape, "windi_rate_limit_refusals_total", kind="socket_frames") >= 1
        assert sample(scrape, "windi_login_failures_total") == 1
    finally:
        stop_server(server)


def test_a_delivery_outage_is_counted_and_shown_while_it_lasts(database_url: str, tmp_path: Path) -> None:
    redis = RedisServer(free_port())
    redis.start()
    env = {"WINDI_METRICS": "true", "WINDI_CHANNELS_URL": redis.url}
    server = start_server(database_url, tmp_path / "outage.log", env)
    try:
        with server.http() as http:

            def scrape() -> str:
                return http.get("/metrics").text

            assert sample(scrape(), "windi_delivery_degraded") == 0
            redis.stop()
            during = wait_for(lambda: sample(text := scrape(), "windi_delivery_degraded") == 1 and text)
            assert sample(during, "windi_delivery_outages_total") == 1
            redis.start()
            after = wait_for(
                lambda: sample(text := scrape(), "windi_delivery_degraded") == 0 and text, timeout=30
            )
            assert sample(after, "windi_delivery_outages_total") == 1
            assert sample(after, "windi_delivery_reconnects_total") >= 1
    finally:
        stop_server(server)
        redis.stop()


def test_every_kind_of_event_header_is_counted_or_ignored_without_error() -> None:
    before = DELIVERED[ord("U")]._value.get()
    count_delivery(ord("U"))  # a message_updated event
    assert DELIVERED[ord("U")]._value.get() == before + 1
    for kind in b"MTR-?":
        count_delivery(kind)
