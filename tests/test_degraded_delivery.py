"""Degraded mode against real processes: the delivery backend goes down under live traffic and comes back.

Two server processes share PostgreSQL and a delivery backend of the test's own: a redis-server that is
killed and started again, or LISTEN/NOTIFY on a database of its own, closed to connections (its
connections cut) and opened again while the main database stays up. While the backend is down, every
message must reach every member within 3 s (a deadline waited for, not a timing measured), reads and
a removal must still reach the sockets, and a revoked session must still lose its socket; once the
backend is back, each socket must have had every message once, in seq order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.api import Account, Api
from tests.conftest import LiveServer, free_port, run, start_server, stop_server, wait_for
from tests.redis_server import RedisServer
from tests.wsclient import Frame, open_socket, receive_until_closed

DELIVERY_DEADLINE = 3.0  # seconds for a message to reach every member while the backend is down
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


class Backend(Protocol):
    url: str

    def down(self) -> None: ...

    def up(self) -> None: ...


@dataclass
class RedisBackend:
    redis: RedisServer

    @property
    def url(self) -> str:
        return self.redis.url

    def down(self) -> None:
        self.redis.stop()

    def up(self) -> None:
        self.redis.start()


@dataclass
class NotifyDatabase:
    """LISTEN/NOTIFY on a database of its own, which can refuse connections while the main one serves."""

    admin_url: str
    name: str

    @property
    def url(self) -> str:
        return str(make_url(self.admin_url).set(drivername="postgresql", database=self.name))

    def _admin(self, statement: str, *args: Any) -> None:
        async def execute() -> None:
            parsed = make_url(self.admin_url)
            connection = await asyncpg.connect(
                host=parsed.host, port=parsed.port or 5432, user=parsed.username, database="postgres"
            )
            try:
                await connection.execute(statement, *args)
            finally:
                await connection.close()

        run(execute())

    def create(self) -> None:
        self.drop()
        self._admin(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def down(self) -> None:
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self._admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", self.name)

    def up(self) -> None:
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture(params=["redis", "postgres"])
def backend(request: pytest.FixtureRequest, pg_database_url: str) -> Iterator[Backend]:
    if request.param == "redis":
        redis = RedisServer(free_port())
        redis.start()
        yield RedisBackend(redis)
        redis.stop()
        return
    notify = NotifyDatabase(pg_database_url, f"{make_url(pg_database_url).database}_notify")
    notify.create()
    yield notify
    notify.drop()


@dataclass
class Watcher:
    """One member's socket, read by a thread of its own: every frame, when it came, and the close code."""

    socket: ClientConnection
    frames: list[tuple[float, Frame]] = field(default_factory=list)
    close_code: int | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                self.frames.append((time.monotonic(), json.loads(self.socket.recv())))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else 1006

    def seqs(self) -> list[int]:
        return [frame["message"]["seq"] for _, frame in self.frames if frame["type"] == "message"]

    def has(self, kind: str, **fields: Any) -> bool:
        return any(
            frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items())
            for _, frame in list(self.frames)
        )

    def closed(self) -> bool:
        return self.close_code is not None

    def close(self) -> None:
        self.socket.close()
        self._thread.join(timeout=10)


def health(server: LiveServer) -> str:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        response = http.get("/health")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def send_and_see_delivered(api: Api, sender: Account, chat_id: int, name: str, members: list[Watcher]) -> int:
    """Send over REST; every member's socket must have the message within the deadline."""
    seq: int = api.send(sender, chat_id, name, name)["seq"]
    wait_for(lambda: all(seq in watcher.seqs() for watcher in members), timeout=DELIVERY_DEADLINE)
    return seq


def test_sockets_are_served_from_the_database_while_the_delivery_backend_is_down(
    backend: Backend, pg_database_url: str, tmp_path: Path
) -> None:
    env = {"WINDI_CHANNELS_URL": backend.url}
    a = start_server(pg_database_url, tmp_path / "a.log", env)
    b = start_server(pg_database_url, tmp_path / "b.log", env)
    watchers: list[Watcher] = []
    try:
        with a.http() as http_a, b.http() as http_b, ExitStack() as sockets:
            api_a, api_b = Api(http_a), Api(http_b)
            owner, member, leaver, revoked = api_a.people("Owner", "Member", "Leaver", "Revoked")
            chat_id = api_a.group(owner, "Team", [member, leaver, revoked])["id"]

            def watch(server: LiveServer, account: Account, after_seq: int | None = None) -> Watcher:
                socket = sockets.enter_context(open_socket(server.ws_url, chat_id, account.token, after_seq))
                watchers.append(Watcher(socket))
                return watchers[-1]

            owner_a, member_b, leaver_b, revoked_a = (
                watch(a, owner),
                watch(b, member),
                watch(b, leaver),
                watch(a, revoked),
            )
            everyone = [owner_a, member_b, leaver_b, revoked_a]
            send_and_see_delivered(api_a, owner, chat_id, "before", everyone)

            backend.down()
            wait_for(lambda: health(a) == health(b) == "degraded", interval=0.2)
            for index in range(6):
                api, sender = (api_a, owner) if index % 2 else (api_b, member)
                send_and_see_delivered(api, sender, chat_id, f"down-{index}", everyone)

            # A socket opened during the outage is admitted and catches up.
            late_b = watch(b, owner, after_seq=0)
            wait_for(lambda: late_b.seqs() == list(range(1, 8)))

            api_b.read(member, chat_id, 7)
            wait_for(lambda: owner_a.has("read", user_id=member.id, seq=7), timeout=DELIVERY_DEADLINE)

            api_a.remove_member(owner, chat_id, leaver)
            wait_for(leaver_b.closed, timeout=DELIVERY_DEADLINE)
            assert leaver_b.close_code == CLOSE_FORBIDDEN
            assert leaver_b.has("member_removed", user_id=leaver.id)
            wait_for(lambda: owner_a.has("member_removed", user_id=leaver.id), timeout=DELIVERY_DEADLINE)

            api_a.logout(revoked)
            wait_for(revoked_a.closed, timeout=DELIVERY_DEADLINE)
            assert revoked_a.close_code == CLOSE_UNAUTHORIZED
            for server in (a, b):  # the revocation event was lost: each process asks the database
                with open_socket(server.ws_url, chat_id, revoked.token) as refused:
                    assert receive_until_closed(refused)[1] == CLOSE_UNAUTHORIZED

            remaining = [owner_a, member_b, late_b]
            send_and_see_delivered(api_a, owner, chat_id, "last-down", remaining)
            backend.up()
            wait_for(lambda: health(a) == health(b) == "ok", timeout=30, interval=0.2)
            for index in range(4):
                api, sender = (api_a, owner) if index % 2 else (api_b, member)
                send_and_see_delivered(api, sender, chat_id, f"up-{index}", remaining)
            last = 12
            wait_for(lambda: all(watcher.seqs()[-1:] == [last] for watcher in remaining))
            for watcher in remaining:
                assert watcher.seqs() == list(range(watcher.seqs()[0], last + 1)), watcher.seqs()
                assert watcher.close_code is None
    finally:
        for watcher in watchers:
            watcher.close()
        stop_server(a)
        stop_server(b)
    for server in (a, b):
        log = server.log()
        assert "Traceback" not in log
        assert log.count("Live delivery is down") == 1
        assert log.count("Live delivery is back") == 1


def test_edits_reactions_and_deletes_reach_every_socket_across_an_outage_and_sockets_following_revs_once(
    backend: Backend, pg_database_url: str, tmp_path: Path
) -> None:
    env = {"WINDI_CHANNELS_URL": backend.url}
    a = start_server(pg_database_url, tmp_path / "a.log", env)
    b = start_server(pg_database_url, tmp_path / "b.log", env)
    watchers: list[Watcher] = []
    try:
        with a.http() as http_a, b.http() as http_b, ExitStack() as sockets:
            api_a, api_b = Api(http_a), Api(http_b)
            owner, member = api_a.people("Owner", "Member")
            chat_id = api_a.group(owner, "Team", [member])["id"]
            for n in range(1, 4):
                api_a.send(owner, chat_id, f"m{n}", f"m{n}")

            def watch(server: LiveServer, account: Account, after_rev: int | None) -> Watcher:
                socket = open_socket(server.ws_url, chat_id, account.token, after_rev=after_rev)
                watchers.append(Watcher(sockets.enter_context(socket)))
                return watchers[-1]

            by_rev = [watch(a, member, 1), watch(b, owner, 2)]
            plain = [watch(a, owner, None), watch(b, member, None)]
            wait_for(lambda: all(revs_of(w)[-1:] == [3] for w in by_rev))

            backend.down()
            wait_for(lambda: health(a) == health(b) == "degraded", interval=0.2)
            api_a.edit(owner, chat_id, 1, "edited while down")
            api_b.react(member, chat_id, 2, "👍")
            api_b.send(member, chat_id, "m4", "m4")
            api_a.delete_message(owner, chat_id, 3)
            api_b.edit(member, chat_id, 4, "m4 edited while down")
            down_rev = 8
            wait_for(
                lambda: all(revs_of(w)[-1:] == [down_rev] for w in by_rev + plain), timeout=DELIVERY_DEADLINE
            )

            backend.up()
            wait_for(lambda: health(a) == health(b) == "ok", timeout=30, interval=0.2)
            api_b.react(owner, chat_id, 1, "🎉")
            api_a.edit(owner, chat_id, 2, "edited live")
            last_rev = 10
            wait_for(lambda: all(revs_of(w)[-1:] == [last_rev] for w in by_rev + plain))

            current = {m["seq"]: m for m in api_a.history(owner, chat_id)}
            for watcher in by_rev:
                revs = revs_of(watcher)
                assert revs == sorted(set(revs)), revs  # every change once, in rev order
                assert held_messages(watcher) == current
            for watcher in plain:
                assert watcher.seqs() == [4], watcher.seqs()  # the one new message, once
                assert held_messages(watcher) == {seq: current[seq] for seq in held_messages(watcher)}
                assert set(held_messages(watcher)) == {1, 2, 3, 4}
    finally:
        for watcher in watchers:
            watcher.close()
        stop_server(a)
        stop_server(b)
    for server in (a, b):
        assert "Traceback" not in server.log()


def revs_of(watcher: Watcher) -> list[int]:
    """The revs of the message and message_updated frames a socket got, in the order they came."""
    return [
        frame["message"]["rev"]
        for _, frame in list(watcher.frames)
        if frame["type"] in ("message", "message_updated")
    ]


def held_messages(watcher: Watcher) -> dict[int, Any]:
    """What a client holds after applying every frame by the stale-frame rule: each seq at its top rev."""
    held: dict[int, Any] = {}
    for _, frame in list(watcher.frames):
        if frame["type"] in ("message", "message_updated"):
            message = frame["message"]
            if message["seq"] not in held or held[message["seq"]]["rev"] < message["rev"]:
                held[message["seq"]] = message
    return held
