"""Presence across two processes on one PostgreSQL, announced through Redis or PostgreSQL LISTEN/NOTIFY.

Process B is the app in the test's own process (its presence driven on its loop, its views read over
its REST API, the chats' frames read from its channels); process A is the app in a child process
(``tests/presence_process.py``), driven through its standard input, and killed to see a process die.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api import Account, Api
from tests.conftest import TEST_SECRET, UNLIMITED, fetch, make_settings, wait_for
from tests.presence_driver import ChatEvents, Gateways, member
from tests.redis_server import RedisServer
from tests.test_scale_out import redis_server as redis_server  # the fixture
from windi_chat.app import create_app

GRACE = 2.0
HEARTBEAT = 0.5
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class OtherProcess:
    """Process A: the app in a child process, holding gateways' presence when told to."""

    process: subprocess.Popen[str]

    def tell(self, command: str, person: Account) -> str:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{command} {person.id}\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def open(self, person: Account) -> None:
        assert self.tell("open", person) == "ok"

    def close(self, person: Account) -> None:
        assert self.tell("close", person) == "ok"

    def holds(self, person: Account) -> bool:
        return self.tell("here", person) == "yes"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipes()


@dataclass
class Pair:
    database_url: str
    channels_url: str
    tmp_path: Path

    def start_other(self) -> OtherProcess:
        env = {
            **os.environ,
            "WINDI_DATABASE_URL": self.database_url,
            "WINDI_CHANNELS_URL": self.channels_url,
            "WINDI_JWT_SECRET": TEST_SECRET,
            "WINDI_MIGRATE_ON_START": "false",
            "WINDI_PRESENCE_GRACE_SECONDS": str(GRACE),
            "WINDI_PRESENCE_HEARTBEAT_SECONDS": str(HEARTBEAT),
            "PYTHONPATH": str(ROOT),
            **{f"WINDI_{name.upper()}": str(value) for name, value in UNLIMITED.items()},
        }
        with (self.tmp_path / "process-a.log").open("w") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.presence_process"],
                env=env,
                cwd=self.tmp_path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        other = OtherProcess(process)
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            other.kill()
            pytest.fail(f"process A did not start:\n{(self.tmp_path / 'process-a.log').read_text()}")
        return other

    def app(self) -> TestClient[Any]:
        settings = make_settings(
            self.database_url,
            channels_url=self.channels_url,
            presence_grace_seconds=GRACE,
            presence_heartbeat_seconds=HEARTBEAT,
        )
        return TestClient(app=create_app(settings))


@pytest.fixture(params=["redis", "postgres"])
def pair(request: pytest.FixtureRequest, pg_database_url: str, tmp_path: Path) -> Pair:
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        return Pair(pg_database_url, redis.url, tmp_path)
    return Pair(pg_database_url, pg_database_url, tmp_path)


@pytest.fixture
def process_a(pair: Pair) -> Iterator[OtherProcess]:
    other = pair.start_other()
    yield other
    other.stop()


@pytest.fixture
def b(pair: Pair, process_a: OtherProcess) -> Iterator[TestClient[Any]]:
    with pair.app() as client:
        yield client


def online(api: Api, viewer: Account, chat_id: int, person: Account) -> bool:
    return bool(member(api, viewer, chat_id, person)["online"])


def test_a_gateway_on_one_process_shows_online_on_the_other(
    process_a: OtherProcess, b: TestClient[Any], pg_database_url: str
) -> None:
    api = Api(b)
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(b, chat_id)

    process_a.open(bob)
    wait_for(lambda: online(api, ada, chat_id, bob))
    process_a.close(bob)
    assert events.presence(2) == [(True, bob.id), (False, bob.id)]  # the second after the grace
    wait_for(lambda: not online(api, ada, chat_id, bob))
    api.send(ada, chat_id, "sentinel")
    assert events.presence_until_message("sentinel") == []  # nothing more
    assert fetch(pg_database_url, "SELECT last_seen_at FROM users WHERE id = :id", id=bob.id)[0][0]


def test_a_person_on_both_processes_stays_online_until_the_last_gateway_closes(
    process_a: OtherProcess, b: TestClient[Any]
) -> None:
    api = Api(b)
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    events = ChatEvents(b, chat_id)
    on_b = Gateways(b)

    process_a.open(bob)
    wait_for(lambda: online(api, ada, chat_id, bob))
    on_b.open(bob)
    process_a.close(bob)
    wait_for(lambda: not process_a.holds(bob))  # A's grace is over
    api.send(ada, chat_id, "A let go")
    assert events.presence_until_message("A let go") == [(True, bob.id)]
    assert online(api, ada, chat_id, bob)

    on_b.close(bob)
    assert events.presence(1) == [(False, bob.id)]
    assert not online(api, ada, chat_id, bob)


def test_a_process_started_later_learns_who_is_online(pair: Pair, process_a: OtherProcess) -> None:
    with pair.app() as first:
        ada, bob = Api(first).people("Ada", "Bob")
        chat_id = Api(first).private_chat(ada, bob)["id"]
    process_a.open(bob)
    with pair.app() as later:
        wait_for(lambda: online(Api(later), ada, chat_id, bob))


def test_the_people_of_a_killed_process_go_offline_after_the_grace(
    process_a: OtherProcess, b: TestClient[Any], pg_database_url: str
) -> None:
    api = Api(b)
    ada, bob, cy = api.people("Ada", "Bob", "Cy")
    chat_id = api.group(ada, "Team", [bob, cy])["id"]
    events = ChatEvents(b, chat_id)

    process_a.open(bob)
    process_a.open(cy)
    wait_for(lambda: online(api, ada, chat_id, bob) and online(api, ada, chat_id, cy))
    process_a.kill()
    assert sorted(events.presence(4)) == sorted(
        [(True, bob.id), (True, cy.id), (False, bob.id), (False, cy.id)]
    )
    assert not online(api, ada, chat_id, bob)
    assert not online(api, ada, chat_id, cy)
    seen = fetch(pg_database_url, "SELECT last_seen_at FROM users WHERE id IN (:b, :c)", b=bob.id, c=cy.id)
    assert all(row[0] is not None for row in seen)
