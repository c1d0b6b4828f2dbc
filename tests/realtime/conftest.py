"""One server per database for the whole package, a REST driver on it, and sockets closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.api import Api
from tests.conftest import LiveServer, fetch, start_server, stop_server
from tests.wsclient import open_socket


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def shared_database_url(request: pytest.FixtureRequest) -> str:
    """The database behind ``shared_server``: its own, not emptied between tests, which the server could
    not follow."""
    url: str = request.getfixturevalue(f"shared_{request.param}_url")
    return url


@pytest.fixture(scope="package")
def shared_server(shared_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One uvicorn process for every test of the package, since each start costs seconds."""
    server = start_server(shared_database_url, tmp_path_factory.mktemp("realtime") / "server.log")
    yield server
    stop_server(server)


@pytest.fixture
def rest(shared_server: LiveServer) -> Iterator[Api]:
    """The REST driver on the shared server; ``rest.people`` makes people no other test has made."""
    with shared_server.http() as http:
        yield Api(http)


@pytest.fixture
def connect(shared_server: LiveServer) -> Iterator[Callable[..., ClientConnection]]:
    """Opens sockets to the server (the token in the query string) and closes them after the test."""
    with ExitStack() as opened:

        def open_(chat_id: int | str, token: str | None, **options: Any) -> ClientConnection:
            return opened.enter_context(open_socket(shared_server.ws_url, chat_id, token, **options))

        yield open_


def stored_messages(database_url: str, chat_id: int) -> list[Any]:
    """The chat's messages as stored, in seq order: what the acks and frames must agree with."""
    return fetch(
        database_url,
        "SELECT id, seq, sender_id, client_id, text FROM messages WHERE chat_id = :chat_id ORDER BY seq",
        chat_id=chat_id,
    )
