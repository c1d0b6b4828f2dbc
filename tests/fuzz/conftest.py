"""A real server on PostgreSQL with people, chats and messages in it, for the fuzz runs to aim at.

The fuzz tests are marked ``fuzz`` and left out of the ordinary run; ``pytest -m fuzz tests/fuzz`` runs
them (the CI's ``fuzz`` step). ``WINDI_FUZZ_EXAMPLES`` sets how many cases each target gets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.api import Account, Api
from tests.conftest import LiveServer, start_server, stop_server

EXAMPLES = int(os.environ.get("WINDI_FUZZ_EXAMPLES", "40"))
# Limits a fuzzer would trip at once, raised so that it reaches the code behind them.
UNLIMITED = {
    "WINDI_WS_FRAMES_PER_SECOND": "100000",
    "WINDI_SEND_RATE": "100000",
    "WINDI_SEND_BURST": "100000",
    "WINDI_SEARCH_RATE": "100000",
    "WINDI_SEARCH_BURST": "100000",
    "WINDI_AUTH_RATE_LIMIT": "0",
}


@dataclass
class World:
    """Who the fuzzer acts as, and the chats it can reach."""

    server: LiveServer
    ada: Account
    bob: Account
    private_chat_id: int
    group_id: int


@pytest.fixture(scope="package")
def fuzz_server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(postgres_url, tmp_path_factory.mktemp("fuzz") / "server.log", UNLIMITED)
    yield server
    stop_server(server)


@pytest.fixture(scope="package")
def world(fuzz_server: LiveServer) -> Iterator[World]:
    with fuzz_server.http() as http:
        api = Api(http)
        ada, bob, eve = api.people("Ada", "Bob", "Eve")
        private_chat_id = api.private_chat(ada, bob)["id"]
        group_id = api.group(ada, "Fuzzers", [bob, eve])["id"]
        for chat_id in (private_chat_id, group_id):
            for number in range(3):
                api.send(ada, chat_id, f"message {number}")
                api.send(bob, chat_id, f"answer {number}")
        yield World(fuzz_server, ada, bob, private_chat_id, group_id)
