"""Every request and socket has an id: the client's ``X-Request-ID`` when usable, in its log lines."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import LiveServer, wait_for
from tests.wsclient import open_socket
from windi_chat.logs import JSONFormatter, RequestIdFilter, request_id

GENERATED = re.compile(r"[0-9a-f]{32}")


def test_a_response_carries_a_new_request_id_when_the_client_sent_none(client: TestClient[Any]) -> None:
    first = client.get("/health").headers["X-Request-ID"]
    second = client.get("/health").headers["X-Request-ID"]
    assert GENERATED.fullmatch(first)
    assert first != second


def test_the_clients_request_id_is_sent_back(client: TestClient[Any]) -> None:
    response = client.get("/health", headers={"X-Request-ID": "mobile-7f3a:42"})
    assert response.headers["X-Request-ID"] == "mobile-7f3a:42"


@pytest.mark.parametrize("unusable", ["x" * 65, "two words", "", "<script>", "a\tb"])
def test_an_unusable_request_id_is_replaced_by_a_new_one(client: TestClient[Any], unusable: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": unusable})
    assert GENERATED.fullmatch(response.headers["X-Request-ID"])


def test_errors_and_unknown_paths_carry_the_request_id_too(client: TestClient[Any]) -> None:
    assert client.get("/users/me", headers={"X-Request-ID": "err-1"}).headers["X-Request-ID"] == "err-1"
    assert client.get("/no/such/path", headers={"X-Request-ID": "err-2"}).headers["X-Request-ID"] == "err-2"


def test_a_requests_log_lines_carry_its_id(live_server: LiveServer) -> None:
    with live_server.http() as http:
        http.headers["X-Request-ID"] = "trace-register-1"
        account = Api(http).account("Ada")
    assert account.id
    log = wait_for(lambda: "User registered" in live_server.log() and live_server.log())
    (line,) = [line for line in log.splitlines() if f"user_id={account.id}" in line and "registered" in line]
    assert "[trace-register-1]" in line


def test_a_sockets_handshake_and_log_lines_carry_its_id(live_server: LiveServer) -> None:
    with live_server.http() as http:
        api = Api(http)
        ada, bob = api.account("Ada"), api.account("Bob")
        chat_id = api.private_chat(ada, bob)["id"]
    headers = {"X-Request-ID": "socket-trace-9"}
    with open_socket(live_server.ws_url, chat_id, ada.token, headers=headers) as socket:
        assert socket.response is not None
        assert socket.response.headers["X-Request-ID"] == "socket-trace-9"
    log = wait_for(lambda: "Socket closed" in live_server.log() and live_server.log())
    lines = [line for line in log.splitlines() if f"chat_id={chat_id} user_id={ada.id}" in line]
    assert lines
    assert all("[socket-trace-9]" in line for line in lines)


def test_json_log_lines_have_a_request_id_field() -> None:
    record = logging.LogRecord("windi_chat.test", logging.INFO, __file__, 1, "hello", None, None)
    token = request_id.set("json-trace-3")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    assert json.loads(JSONFormatter().format(record))["request_id"] == "json-trace-3"
