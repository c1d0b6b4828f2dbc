"""Two deployments (each its own database) on one Redis, or LISTENing on one PostgreSQL database, see
none of each other's events; two processes of one namespace still share theirs.

Both deployments start from empty tables, so their chats and people have the same ids: without
namespaces, chat 1 of one would be chat 1 of the other. "Not delivered" is judged without sleeping:
after A has published (A's own socket has the message), B publishes a sentinel on the same channel
name; B's socket would get A's event before its own sentinel if the two shared channels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import make_url

from tests.api import Account, Api
from tests.conftest import (
    LiveServer,
    _migrate,
    _recreate_pg_database,
    _truncate,
    free_port,
    run,
    start_server,
    stop_server,
)
from tests.test_scale_out import RedisServer
from tests.wsclient import Frame, is_message, open_socket, receive_until
from windi_chat.namespaces import MAX_NAMESPACE_LENGTH, default_namespace


@pytest.fixture(scope="module")
def other_database(postgres_url: str) -> str:
    """A second test database on the same PostgreSQL cluster, for a second deployment."""
    url = make_url(postgres_url)
    other = url.set(database=f"{url.database}_other").render_as_string(hide_password=False)
    run(_recreate_pg_database(other))
    run(_migrate(other))
    return other


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class Deployment:
    server: LiveServer
    api: Api
    ada: Account
    bob: Account
    chat_id: int
    group_id: int


StartPair = Callable[..., tuple[Deployment, Deployment]]


@pytest.fixture
def start_pair(
    pg_database_url: str, other_database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartPair]:
    """Starts deployments A and B on their own databases with the given channels URL and settings."""
    run(_truncate(other_database))
    servers: list[LiveServer] = []
    clients = []

    def start(channels: str, **env: str) -> tuple[Deployment, Deployment]:
        channels_url = request.getfixturevalue("own_redis").url if channels == "redis" else pg_database_url
        deployments = []
        for name, database in (("a", pg_database_url), ("b", other_database)):
            server = start_server(
                database, tmp_path / f"{name}.log", {"WINDI_CHANNELS_URL": channels_url, **env}
            )
            servers.append(server)
            http = server.http()
            clients.append(http)
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]
            group_id = api.group(ada, "Team", [bob])["id"]
            deployments.append(Deployment(server, api, ada, bob, chat_id, group_id))
        a, b = deployments
        assert (a.chat_id, a.group_id, a.bob.id) == (b.chat_id, b.group_id, b.bob.id)  # same names
        return a, b

    yield start
    for http in clients:
        http.close()
    for server in servers:
        stop_server(server)


def client_ids(frames: list[Frame]) -> list[str]:
    return [f["message"]["client_id"] for f in frames if f["type"] == "message"]


def frames_on_b_after_a_sends(a: Deployment, b: Deployment) -> list[Frame]:
    with (
        open_socket(a.server.ws_url, a.chat_id, a.ada.token) as on_a,
        open_socket(b.server.ws_url, b.chat_id, b.bob.token) as on_b,
    ):
        a.api.send(a.ada, a.chat_id, "private to A", "from-a")
        receive_until(on_a, is_message(client_id="from-a"))  # A has published it
        b.api.send(b.ada, b.chat_id, "hi", "sentinel-from-b")
        return receive_until(on_b, is_message(client_id="sentinel-from-b"))


@pytest.mark.parametrize("channels", ["redis", "postgres"])
def test_deployments_on_different_databases_do_not_see_each_others_messages(
    start_pair: StartPair, channels: str
) -> None:
    a, b = start_pair(channels)
    assert client_ids(frames_on_b_after_a_sends(a, b)) == ["sentinel-from-b"]


@pytest.mark.parametrize("channels", ["redis", "postgres"])
def test_processes_given_one_namespace_share_their_events(start_pair: StartPair, channels: str) -> None:
    """The control: were the channels not apart, the test above would see A's message like this."""
    a, b = start_pair(channels, WINDI_CHANNELS_NAMESPACE="shared")
    assert client_ids(frames_on_b_after_a_sends(a, b)) == ["from-a", "sentinel-from-b"]


@pytest.mark.parametrize("channels", ["redis", "postgres"])
def test_a_removal_in_one_deployment_closes_no_socket_of_the_other(
    start_pair: StartPair, channels: str
) -> None:
    a, b = start_pair(channels)
    with open_socket(b.server.ws_url, b.group_id, b.bob.token) as bob_on_b:
        a.api.remove_member(a.ada, a.group_id, a.bob, expect=200)
        a.api.logout(a.bob)
        b.api.send(b.ada, b.group_id, "still here?", "sentinel-from-b")
        frames = receive_until(bob_on_b, is_message(client_id="sentinel-from-b"))
    assert [f["type"] for f in frames] == ["message"]
    b.api.me(b.bob, expect=200)


def test_login_locks_are_counted_per_deployment_on_a_shared_redis(start_pair: StartPair) -> None:
    a, b = start_pair("redis", WINDI_LOGIN_MAX_FAILURES="2")
    for _ in range(2):
        a.api.login(a.ada.email, "wrong password", expect=401)
        b.api.login(a.ada.email, "wrong password", expect=401)  # not an account of B, counted apart
    a.api.login(a.ada.email, expect=429)
    b.api.login(a.ada.email, "wrong password", expect=429)


# --- The default namespace ---


def test_the_default_namespace_is_the_database_name() -> None:
    assert default_namespace("postgresql+asyncpg://u:secret@db:5432/windi") == "windi"
    assert default_namespace("postgresql+asyncpg://u@other-host/windi") == "windi"


def test_different_databases_get_different_namespaces() -> None:
    assert default_namespace("postgresql+asyncpg://db/one") != default_namespace(
        "postgresql+asyncpg://db/two"
    )
    assert default_namespace("sqlite+aiosqlite:///a/chat.db") != default_namespace(
        "sqlite+aiosqlite:///b/chat.db"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://db/" + "x" * 80,
        'postgresql+asyncpg://db/"we!rd name"',
        "sqlite+aiosqlite:///chat.db",
    ],
)
def test_a_namespace_always_fits_a_postgresql_channel_name(url: str) -> None:
    namespace = default_namespace(url)
    assert 0 < len(namespace) <= MAX_NAMESPACE_LENGTH
    assert namespace.replace("_", "").replace("-", "").replace(".", "").isalnum()
