"""Two server processes sharing one PostgreSQL, with live delivery on Redis or PostgreSQL LISTEN/NOTIFY.

Each backend gets its own pair of uvicorn processes (A and B). The memory backend runs the first test
too, and must fail to deliver across processes: that is how we know the test can tell.

"Delivered across" is judged without sleeping: after A has published a message (A's own socket has
it), B publishes a sentinel; a shared backend hands B's subscription the two in that order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.api import Account, Api
from tests.conftest import LiveServer, fetch, free_port, start_server, stop_server, wait_for
from tests.reconnect_race import CLOSED_AS_REMOVED, reconnect_during_removal
from tests.redis_server import RedisServer
from tests.wsclient import (
    Frame,
    is_message,
    is_type,
    open_gateway,
    open_socket,
    receive_count,
    receive_until,
    receive_until_closed,
    send_frame,
    send_sync,
)

CLOSE_FORBIDDEN = 4403


# Services -----------------------------------------------------------------------------------------


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class Cluster:
    """Processes A and B on one database and one delivery backend."""

    backend: str
    a: LiveServer
    b: LiveServer
    database_url: str
    redis: RedisServer | None = None
    _clients: list[httpx.Client] = field(default_factory=list)

    def api(self, server: LiveServer) -> Api:
        """The REST driver on one process; its client is closed with the cluster."""
        client = server.http()
        self._clients.append(client)
        return Api(client)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        stop_server(self.a)
        stop_server(self.b)


def _start_cluster(
    backend: str, postgres_url: str, tmp_path: Path, redis: RedisServer | None, **env: str
) -> Cluster:
    channels_url = {"memory": "memory://", "postgres": postgres_url}.get(backend) or (redis and redis.url)
    assert channels_url
    env = {"WINDI_CHANNELS_URL": channels_url, "WINDI_WS_FRAMES_PER_SECOND": "1000", **env}
    a = start_server(postgres_url, tmp_path / f"{backend}-a.log", env)
    b = start_server(postgres_url, tmp_path / f"{backend}-b.log", env)
    return Cluster(backend, a, b, postgres_url, redis)


@pytest.fixture(params=["redis", "postgres"])
def cluster(request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    redis = None
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
    started = _start_cluster(request.param, postgres_url, tmp_path, redis)
    yield started
    started.close()


# Helpers ------------------------------------------------------------------------------------------


def client_ids(frames: list[Frame]) -> list[str]:
    return [f["message"]["client_id"] for f in frames if f["type"] == "message"]


# Tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "postgres", "memory"])
def test_a_message_sent_on_one_process_reaches_sockets_on_the_other_unless_delivery_is_in_memory(
    backend: str, postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cluster = _start_cluster(backend, postgres_url, tmp_path, redis)
    try:
        api_a, api_b = cluster.api(cluster.a), cluster.api(cluster.b)
        ada, bob = api_a.people("Ada", "Bob")
        chat_id = api_a.private_chat(ada, bob)["id"]
        with (
            open_socket(cluster.a.ws_url, chat_id, ada.token) as on_a,
            open_socket(cluster.b.ws_url, chat_id, bob.token) as on_b,
        ):
            api_a.send(ada, chat_id, "hi", "from-a")
            receive_until(on_a, is_message(client_id="from-a"))  # A has published it
            api_b.send(bob, chat_id, "hi", "sentinel-from-b")
            frames = receive_until(on_b, is_message(client_id="sentinel-from-b"))
        assert ("from-a" in client_ids(frames)) is (backend != "memory")
    finally:
        cluster.close()


def test_members_on_two_processes_exchange_messages_reads_and_typing(cluster: Cluster) -> None:
    api_a = cluster.api(cluster.a)
    ada, bob = api_a.people("Ada", "Bob")
    chat_id = api_a.private_chat(ada, bob)["id"]
    with (
        open_socket(cluster.a.ws_url, chat_id, ada.token) as ada_a,
        open_socket(cluster.b.ws_url, chat_id, bob.token) as bob_b,
        open_socket(cluster.b.ws_url, chat_id, bob.token) as bob_b2,
    ):
        send_frame(ada_a, type="send", client_id="hello", text="Hello Bob")
        for device in (bob_b, bob_b2):
            frame = receive_until(device, is_message(client_id="hello"))[-1]
            assert frame["message"]["text"] == "Hello Bob"

        send_frame(bob_b, type="send", client_id="reply", text="Hi Ada")
        receive_until(ada_a, is_message(client_id="reply"))
        receive_until(bob_b2, is_message(client_id="reply"))

        send_frame(bob_b, type="read", seq=2)
        read = receive_until(ada_a, lambda f: f["type"] == "read" and f["user_id"] == bob.id)[-1]
        assert (read["seq"], read["all_read_seq"]) == (2, 1)  # Ada has not read Bob's reply yet
        assert receive_until(bob_b2, is_type("read"))[-1]["user_id"] == bob.id

        send_frame(bob_b, type="typing")
        assert receive_until(ada_a, is_type("typing"))[-1]["user_id"] == bob.id
        assert receive_until(bob_b2, is_type("typing"))[-1]["user_id"] == bob.id


def test_a_large_message_crosses_processes_whole(cluster: Cluster) -> None:
    api_a = cluster.api(cluster.a)
    ada, bob = api_a.people("Ada", "Bob")
    chat_id = api_a.private_chat(ada, bob)["id"]
    text = "\N{GRINNING FACE}" * 4096  # a 16 kB frame: over PostgreSQL's 8000-byte NOTIFY limit
    with open_socket(cluster.b.ws_url, chat_id, bob.token) as bob_b:
        api_a.send(ada, chat_id, text, "big")
        frame = receive_until(bob_b, is_message(client_id="big"))[-1]
    assert frame["message"]["text"] == text


def test_removal_on_one_process_closes_the_members_socket_on_the_other(cluster: Cluster) -> None:
    api_a = cluster.api(cluster.a)
    owner, member, other = api_a.people("Owner", "Member", "Other")
    chat_id = api_a.group(owner, "Team", [member, other])["id"]
    with open_socket(cluster.b.ws_url, chat_id, member.token) as member_b:
        api_a.remove_member(owner, chat_id, member, expect=200)
        frames, code = receive_until_closed(member_b)
    assert code == CLOSE_FORBIDDEN
    assert [f["type"] for f in frames] == ["member_removed"]


def test_a_member_reconnecting_to_one_process_while_removed_on_the_other_keeps_no_socket(
    cluster: Cluster,
) -> None:
    fates = reconnect_during_removal(cluster.api(cluster.a), cluster.b.ws_url)
    assert fates
    assert [fate for fate in fates if fate != CLOSED_AS_REMOVED] == []


def test_concurrent_sends_on_both_processes_are_gap_free_and_reach_every_socket_once(
    cluster: Cluster,
) -> None:
    api_a = cluster.api(cluster.a)
    ada, bob = api_a.people("Ada", "Bob")
    chat_id = api_a.private_chat(ada, bob)["id"]
    per_sender = 25

    def send_all(server: LiveServer, sender: Account, prefix: str) -> None:
        with open_socket(server.ws_url, chat_id, sender.token) as socket:
            for index in range(per_sender):
                send_frame(socket, type="send", client_id=f"{prefix}-{index}", text=f"{prefix} {index}")
            receive_count(socket, is_type("ack"), per_sender)

    with (
        open_socket(cluster.a.ws_url, chat_id, bob.token) as watcher_a,
        open_socket(cluster.b.ws_url, chat_id, ada.token) as watcher_b,
        ThreadPoolExecutor(4) as pool,
    ):
        senders = [
            pool.submit(send_all, server, sender, f"{name}{copy}")
            for copy in (1, 2)
            for server, sender, name in ((cluster.a, ada, "a"), (cluster.b, bob, "b"))
        ]
        for sender in senders:
            sender.result()
        total = 4 * per_sender
        for watcher in (watcher_a, watcher_b):
            frames = receive_count(watcher, is_message(), total, timeout=30)
            seqs = sorted(f["message"]["seq"] for f in frames if f["type"] == "message")
            assert seqs == list(range(1, total + 1))

    stored = fetch(
        cluster.database_url, "SELECT seq FROM messages WHERE chat_id = :c ORDER BY seq", c=chat_id
    )
    assert [row[0] for row in stored] == list(range(1, total + 1))


def test_login_rate_limit_holds_across_processes_on_redis(
    redis_server: RedisServer, postgres_url: str, tmp_path: Path
) -> None:
    cluster = _start_cluster("redis", postgres_url, tmp_path, redis_server, WINDI_AUTH_RATE_LIMIT="4")
    try:
        api_a, api_b = cluster.api(cluster.a), cluster.api(cluster.b)
        statuses = [
            api.login("nobody@example.com", "wrong", expect=None).status_code
            for api in (api_a, api_b, api_a, api_b, api_a, api_b)
        ]
    finally:
        cluster.close()
    assert statuses == [401, 401, 401, 401, 429, 429]


def test_login_and_register_keep_working_on_a_per_process_limit_while_redis_is_down(
    redis_server: RedisServer, postgres_url: str, tmp_path: Path
) -> None:
    server = start_server(
        postgres_url,
        tmp_path / "server.log",
        {"WINDI_CHANNELS_URL": redis_server.url, "WINDI_AUTH_RATE_LIMIT": "4"},
    )
    try:
        with server.http() as http:
            api = Api(http)
            assert api.login("nobody@example.com", "wrong", expect=None).status_code == 401
            redis_server.stop()
            statuses = [
                api.login("nobody@example.com", "wrong", expect=None).status_code,
                api.register("Ada", "ada-redis-down@example.com", expect=None).status_code,
                api.login("ada-redis-down@example.com", expect=None).status_code,
                api.login("nobody@example.com", "wrong", expect=None).status_code,
                api.login("nobody@example.com", "wrong", expect=None).status_code,
            ]
            # Counted in this process from the outage on: four pass, the fifth is limited.
            assert statuses == [401, 201, 200, 401, 429]

            redis_server.start()  # empty again: the shared count starts afresh once it is asked
            wait_for(
                lambda: api.login("ada-redis-down@example.com", expect=None).status_code == 200, interval=0.5
            )
    finally:
        stop_server(server)
    log = server.log()
    assert "Traceback" not in log
    assert log.count("Rate-limit store unavailable") == 1
    assert log.count("Rate-limit store reachable again") == 1


# Recovery -----------------------------------------------------------------------------------------


@dataclass
class FollowingClient:
    """A client that follows the documented reconnect procedure: on any close, reconnect with after_seq."""

    server: LiveServer
    chat_id: int
    token: str
    expected: int
    received: list[int] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 90
            while len(set(self.received)) < self.expected and time.monotonic() < deadline:
                self._one_connection()
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def _one_connection(self) -> None:
        after = max(self.received, default=0)
        try:
            with open_socket(self.server.ws_url, self.chat_id, self.token, after_seq=after) as socket:
                while len(set(self.received)) < self.expected:
                    frame = json.loads(socket.recv(timeout=30))
                    if frame["type"] == "message":
                        self.received.append(frame["message"]["seq"])
        except ConnectionClosed as exc:
            self.close_codes.append(exc.rcvd.code if exc.rcvd else 1006)
            time.sleep(0.1)  # reconnect backoff, as a client would
        except OSError:
            self.close_codes.append(1006)
            time.sleep(0.1)


def _interrupt(cluster: Cluster) -> Callable[[], None]:
    """Restart Redis, or cut every LISTEN connection of the servers."""
    if cluster.backend == "redis":
        redis = cluster.redis
        assert redis is not None

        def restart_redis() -> None:
            redis.stop()
            redis.start()

        return restart_redis

    def cut_listen_connections() -> None:
        rows = fetch(
            cluster.database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'windi-chat-listen'",
        )
        assert len(rows) == 2  # one per process

    return cut_listen_connections


def test_clients_recover_every_message_once_when_the_backend_drops_out(cluster: Cluster) -> None:
    api_a = cluster.api(cluster.a)
    ada, bob = api_a.people("Ada", "Bob")
    chat_id = api_a.private_chat(ada, bob)["id"]
    total = 60
    follower = FollowingClient(cluster.b, chat_id, bob.token, total)
    reader = threading.Thread(target=follower.run)

    api_a.send(ada, chat_id, "hi", "m-0")
    reader.start()
    wait_for(lambda: follower.received, timeout=20)
    for index in range(1, 20):
        api_a.send(ada, chat_id, "hi", f"m-{index}")
    _interrupt(cluster)()
    for index in range(20, total):
        api_a.send(ada, chat_id, "hi", f"m-{index}")
    reader.join(timeout=120)

    assert follower.error is None, follower.error
    assert sorted(follower.received) == list(range(1, total + 1)), follower.received  # every one, once
    assert follower.close_codes == []  # served from the database while the backend was down


def _presence_of(person_id: int, online: bool) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "presence" and f["user_id"] == person_id and f["online"] is online


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_presence_of_a_gateway_on_one_process_reaches_a_gateway_on_the_other_with_the_grace(
    backend: str, postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cluster = _start_cluster(backend, postgres_url, tmp_path, redis, WINDI_PRESENCE_GRACE_SECONDS="0.5")
    try:
        api_a, api_b = cluster.api(cluster.a), cluster.api(cluster.b)
        ada, bob = api_a.people("Ada", "Bob")
        chat_id = api_a.private_chat(ada, bob)["id"]

        def ada_as_bob_sees_her() -> dict[str, Any]:
            members = api_b.chat(bob, chat_id)["members"]
            return next(member for member in members if member["user_id"] == ada.id)

        with open_gateway(cluster.b.ws_url, bob.token) as bob_on_b:
            send_sync(bob_on_b, {chat_id: 0})
            with open_gateway(cluster.a.ws_url, ada.token) as ada_on_a:
                send_sync(ada_on_a, {chat_id: 0})
                receive_until(bob_on_b, _presence_of(ada.id, True))
                wait_for(lambda: ada_as_bob_sees_her()["online"])
            offline = receive_until(bob_on_b, _presence_of(ada.id, False))[-1]
            assert offline["last_seen"] is not None
            assert ada_as_bob_sees_her()["online"] is False
            assert ada_as_bob_sees_her()["last_seen"] is not None
    finally:
        cluster.close()
