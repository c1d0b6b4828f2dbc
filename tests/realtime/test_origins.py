"""Browsers and origins: the socket's ``Origin`` check and CORS for REST, against real servers.

The package's shared server runs with the default (no ``WINDI_ALLOWED_ORIGINS``): browsers only from
its own origin. ``listed_server`` allows two origins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api import Api
from tests.conftest import LiveServer, start_server, stop_server
from tests.wsclient import open_socket, receive_until_closed, send_and_confirm

CLOSE_FORBIDDEN = 4403
APP = "https://app.example"
LOCAL_APP = "http://localhost:3000"
FOREIGN = "https://evil.example"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture(scope="module")
def listed_server(shared_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that allows two origins, written as an operator might (a default port, upper case)."""
    env = {"WINDI_ALLOWED_ORIGINS": f" {APP}:443 , HTTP://LOCALHOST:3000"}
    server = start_server(shared_database_url, tmp_path_factory.mktemp("origins") / "server.log", env)
    yield server
    stop_server(server)


def _chat_of_two(api: Api) -> tuple[Any, int]:
    ada, bob = api.people("Ada", "Bob")
    return ada, api.private_chat(ada, bob)["id"]


# The socket -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [APP, LOCAL_APP])
def test_a_listed_origin_opens_a_socket(listed_server: LiveServer, origin: str) -> None:
    with listed_server.http() as http:
        ada, chat_id = _chat_of_two(Api(http))
    with open_socket(listed_server.ws_url, chat_id, ada.token, headers={"Origin": origin}) as socket:
        assert send_and_confirm(socket, "from-the-app")["sender_id"] == ada.id


@pytest.mark.parametrize(
    "origin",
    [FOREIGN, "https://app.example.evil.example", "http://app.example", "https://app.example:8443", "null"],
)
def test_an_origin_not_listed_is_closed_with_4403(listed_server: LiveServer, origin: str) -> None:
    with listed_server.http() as http:
        ada, chat_id = _chat_of_two(Api(http))
    with open_socket(listed_server.ws_url, chat_id, ada.token, headers={"Origin": origin}) as socket:
        assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


def test_with_a_list_the_servers_own_origin_is_not_allowed_either(listed_server: LiveServer) -> None:
    with listed_server.http() as http:
        ada, chat_id = _chat_of_two(Api(http))
    own = listed_server.base_url
    with open_socket(listed_server.ws_url, chat_id, ada.token, headers={"Origin": own}) as socket:
        assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


def test_a_foreign_origin_is_refused_by_default(rest: Api, connect: Any) -> None:
    ada, chat_id = _chat_of_two(rest)
    socket = connect(chat_id, ada.token, headers={"Origin": FOREIGN})
    assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


def test_a_foreign_origin_is_refused_before_its_token_is_looked_at(rest: Api, connect: Any) -> None:
    _, chat_id = _chat_of_two(rest)
    socket = connect(chat_id, "not-a-token", headers={"Origin": FOREIGN})
    assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


def test_a_client_without_an_origin_is_allowed(rest: Api, connect: Any) -> None:
    ada, chat_id = _chat_of_two(rest)
    assert send_and_confirm(connect(chat_id, ada.token), "native")["sender_id"] == ada.id


def test_the_servers_own_origin_is_allowed_by_default(
    rest: Api, connect: Any, shared_server: LiveServer
) -> None:
    ada, chat_id = _chat_of_two(rest)
    socket = connect(chat_id, ada.token, headers={"Origin": shared_server.base_url})
    assert send_and_confirm(socket, "same-origin")["sender_id"] == ada.id


@pytest.fixture(scope="module")
def proxied_server(
    shared_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server behind a TLS proxy on the same host: 127.0.0.1's X-Forwarded-* headers are believed."""
    env = {"WINDI_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    server = start_server(shared_database_url, tmp_path_factory.mktemp("proxied") / "server.log", env)
    yield server
    stop_server(server)


@pytest.mark.parametrize(("scheme", "allowed"), [("https", True), ("http", False)])
def test_behind_a_tls_proxy_the_own_origin_is_https(
    proxied_server: LiveServer, scheme: str, allowed: bool
) -> None:
    """The test client connects from 127.0.0.1, a listed proxy: X-Forwarded-Proto sets the scheme."""
    with proxied_server.http() as http:
        ada, chat_id = _chat_of_two(Api(http))
    host = proxied_server.base_url.removeprefix("http://")
    headers = {"Origin": f"{scheme}://{host}", "X-Forwarded-Proto": "https"}
    with open_socket(proxied_server.ws_url, chat_id, ada.token, headers=headers) as socket:
        if allowed:
            assert send_and_confirm(socket, "through-the-proxy")["sender_id"] == ada.id
        else:
            assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


def test_x_forwarded_proto_from_an_unlisted_address_is_ignored(
    rest: Api, connect: Any, shared_server: LiveServer
) -> None:
    """By default no address is a proxy, not even 127.0.0.1: the header cannot make http look https."""
    ada, chat_id = _chat_of_two(rest)
    host = shared_server.base_url.removeprefix("http://")
    socket = connect(chat_id, ada.token, headers={"Origin": f"https://{host}", "X-Forwarded-Proto": "https"})
    assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


# CORS for REST --------------------------------------------------------------------------------------


def _preflight(server: LiveServer, origin: str) -> httpx.Response:
    with server.http() as http:
        return http.options("/chats", headers={"Origin": origin, **PREFLIGHT})


def test_a_preflight_from_a_listed_origin_is_allowed(listed_server: LiveServer) -> None:
    response = _preflight(listed_server, APP)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type"} <= {h.strip() for h in allowed_headers.split(",")}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_a_listed_origin_may_read_the_answer_to_a_request(listed_server: LiveServer) -> None:
    with listed_server.http() as http:
        ada, _ = _chat_of_two(Api(http))
        response = http.get("/chats", headers={**ada.headers, "Origin": LOCAL_APP})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == LOCAL_APP


def test_a_preflight_from_an_origin_not_listed_is_refused(listed_server: LiveServer) -> None:
    response = _preflight(listed_server, FOREIGN)
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers


def test_by_default_no_origin_is_allowed_cross_origin(shared_server: LiveServer) -> None:
    response = _preflight(shared_server, "https://app.example")
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response.headers
    with shared_server.http() as http:
        answer = http.get("/health", headers={"Origin": "https://app.example"})
    assert answer.status_code == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
