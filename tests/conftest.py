"""Fixtures: real databases (SQLite always, PostgreSQL when reachable), real tokens, real servers.

PostgreSQL: ``WINDI_TEST_DATABASE_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/windi_test``).
The database is dropped and created anew for each run, so every run also migrates an empty schema.
Under pytest-xdist each worker has a database of its own, that name with the worker's id appended
(``windi_test_gw0``, ...), and servers on ports of its own (``tests/ports.py``).
Without a reachable server the PostgreSQL variants are skipped with the reason, unless
``WINDI_TEST_REQUIRE_POSTGRES=1`` (as in CI) turns that into a failure.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.api import Account, Api
from tests.api import register_and_login as register_and_login  # still imported from here
from tests.ports import TCP_LISTEN, listens_on, socket_rows
from tests.ports import free_port as free_port  # still imported from here
from windi_chat.app import create_app
from windi_chat.config import Settings
from windi_chat.database import migrate


def worker_database_url(url: str) -> str:
    """Under pytest-xdist every worker gets a database of its own, named after the worker (``_gw0``...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


PG_URL = worker_database_url(
    os.environ.get("WINDI_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/windi_test")
)
REQUIRE_PG = os.environ.get("WINDI_TEST_REQUIRE_POSTGRES") == "1"
TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
TABLES = ("refresh_tokens", "sessions", "message_reactions", "messages", "chat_members", "chats", "users")
# The per-person limits, out of the way of tests that do not test them (those set them small).
UNLIMITED: dict[str, Any] = {
    "send_rate": 1_000_000.0,
    "send_burst": 1_000_000,
    "search_rate": 1_000_000.0,
    "search_burst": 1_000_000,
    "typing_interval": 0.0,
    "ws_max_sockets_per_user": 100_000,
}


def run(coro: Any) -> Any:
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test server: a fixed secret, cheap argon2, no rate limit."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "auth_rate_limit": 0,
        **UNLIMITED,
        "migrate_on_start": False,
        "log_level": "DEBUG",
        # Many apps start in one test process: freezing each one's heap would keep it for good.
        "gc_freeze": False,
    }
    values.update(overrides)
    return Settings(**values)


async def _recreate_pg_database(url: str) -> None:
    parsed = make_url(url)
    admin = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database="postgres",
        timeout=5,
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{parsed.database}"')
    finally:
        await admin.close()


async def _migrate(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _truncate(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                await connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in TABLES:
                    await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A freshly created, migrated PostgreSQL test database, or a visible skip."""
    try:
        run(_recreate_pg_database(PG_URL))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL not reachable at {make_url(PG_URL).render_as_string()}: {exc}"
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    run(_migrate(PG_URL))
    return PG_URL


def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory, name: str) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp(name) / f'{name}.db'}"
    run(_migrate(url))
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _migrated_sqlite(tmp_path_factory, "windi_test")


@pytest.fixture(scope="session")
def shared_postgres_url(postgres_url: str) -> str:
    """A database of its own for servers that outlive one test (module and package servers).

    Every test on ``postgres_url`` empties it first and may write rows with ids of its own; a server
    that lives across tests on the same database would then find its sequences behind its rows.
    """
    parsed = make_url(postgres_url)
    url = parsed.set(database=f"{parsed.database}_shared").render_as_string(hide_password=False)
    run(_recreate_pg_database(url))
    run(_migrate(url))
    return url


@pytest.fixture(scope="session")
def shared_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same on SQLite: a file no test empties."""
    return _migrated_sqlite(tmp_path_factory, "windi_shared")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that asks for a database runs on both, starting from empty tables."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    run(_truncate(url))
    return url


@pytest.fixture
def pg_database_url(postgres_url: str) -> str:
    """For tests that need PostgreSQL itself (true concurrency, server processes)."""
    run(_truncate(postgres_url))
    return postgres_url


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(make_settings(database_url))) as test_client:
        yield test_client


@pytest.fixture
def api(client: TestClient[Any]) -> Api:
    """The REST driver over the in-process app."""
    return Api(client)


@pytest.fixture
def make_account(api: Api) -> Callable[..., Account]:
    """Registers and logs in someone; the address comes from the name unless one is given."""
    return api.account


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``condition()`` is truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


@dataclass
class LiveServer:
    """A real uvicorn process serving the app, with its log captured to a file."""

    base_url: str
    ws_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def open_connections(self) -> set[int]:
        """The client ports of the TCP connections the server process holds open (read from /proc)."""
        server_port = int(self.base_url.rsplit(":", 1)[1])
        return {
            remote
            for local, remote, state in socket_rows(self.process.pid)
            if state != TCP_LISTEN and local == server_port
        }


def start_server(
    database_url: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    *,
    soft_open_files: int | None = None,
    hard_open_files: int | None = None,
) -> LiveServer:
    """Start ``windi-chat run`` (with ``args``) as a subprocess and wait until /health answers.

    ``soft_open_files`` and ``hard_open_files`` start it with those limits on descriptors, as a
    container might.
    """
    limits = None if soft_open_files is None else _open_files(soft_open_files, hard_open_files)
    env = {
        **os.environ,
        "WINDI_DATABASE_URL": database_url,
        "WINDI_JWT_SECRET": TEST_SECRET,
        "WINDI_ARGON2_TIME_COST": "1",
        "WINDI_ARGON2_MEMORY_KIB": "1024",
        "WINDI_AUTH_RATE_LIMIT": "0",
        "WINDI_LOG_LEVEL": "DEBUG",
        **{f"WINDI_{name.upper()}": str(value) for name, value in UNLIMITED.items()},
        **(extra_env or {}),
    }
    for _ in range(3):
        port = free_port()
        with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "windi_chat.cli",
                    "run",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *args,
                ],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=log_path.parent,
                preexec_fn=limits,
            )
        server = LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", log_path, process)
        try:
            # Generous: two test processes on a loaded two-core machine can slow a start-up a lot.
            if wait_for(lambda server=server: _started(server), timeout=60) == "up":
                return server
        except BaseException:
            stop_server(server)  # no server left behind by a start that failed
            raise
        # Another process took the port between its pick and the bind: start again on another.
    pytest.fail(f"no free port for the server:\n{server.log()}")


def _started(server: LiveServer) -> str | None:
    """Up once the server's own process listens and /health answers; "port taken" if it could not bind."""
    if server.process.poll() is not None:
        if "address already in use" in server.log():
            return "port taken"
        pytest.fail(f"server exited with {server.process.returncode}:\n{server.log()}")
    port = int(server.base_url.rsplit(":", 1)[1])
    if not listens_on(server.process.pid, port):  # not yet, or someone else's server answers there
        return None
    try:
        return "up" if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200 else None
    except httpx.HTTPError:
        return None


def _open_files(soft: int, hard: int | None) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (soft, hard or resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    return lower


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(database_url, tmp_path / "server.log")
    yield server
    stop_server(server)


def app_engine(app: Any) -> Any:
    """The app's own async engine, to count or observe its queries."""
    from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin

    return app.plugins.get(SQLAlchemyPlugin).config[0].get_engine()


async def _insert_messages(url: str, chat_id: int, sender_id: int, texts: list[str]) -> list[int]:
    from windi_chat.models import Chat, Message, utcnow

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            chat = (await connection.execute(Chat.__table__.select().where(Chat.id == chat_id))).one()
            seqs = list(range(chat.last_seq + 1, chat.last_seq + 1 + len(texts)))
            rev = chat.last_rev - chat.last_seq
            now = utcnow()
            await connection.execute(
                Message.__table__.insert(),
                [
                    {
                        "chat_id": chat_id,
                        "seq": seq,
                        "rev": rev + seq,
                        "sender_id": sender_id,
                        "client_id": f"direct-{seq}",
                        "text": body,
                        "created_at": now,
                    }
                    for seq, body in zip(seqs, texts, strict=True)
                ],
            )
            await connection.execute(
                Chat.__table__.update()
                .where(Chat.id == chat_id)
                .values(last_seq=seqs[-1], last_rev=rev + seqs[-1], last_activity_at=now)
            )
        return seqs
    finally:
        await engine.dispose()


def insert_messages(url: str, chat_id: int, sender_id: int, texts: list[str]) -> list[int]:
    """Store messages straight into the database, as a sender would have (their seqs are returned)."""
    return run(_insert_messages(url, chat_id, sender_id, texts))


async def _touch(url: str, chat_id: int, seq: int) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            chat = {"chat": chat_id}
            await connection.execute(text("UPDATE chats SET last_rev = last_rev + 1 WHERE id = :chat"), chat)
            rev: int = (
                await connection.execute(text("SELECT last_rev FROM chats WHERE id = :chat"), chat)
            ).scalar_one()
            await connection.execute(
                text("UPDATE messages SET rev = :rev WHERE chat_id = :chat AND seq = :seq"),
                {**chat, "rev": rev, "seq": seq},
            )
            return rev
    finally:
        await engine.dispose()


def touch(url: str, chat_id: int, seq: int) -> int:
    """Give a stored message the chat's next rev, as every change of it does, without telling any socket.

    The database alone then knows of the change: what the change feed and the poller read.
    """
    rev: int = run(_touch(url, chat_id, seq))
    return rev


async def _fetch(url: str, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(statement), params or {})).all())
    finally:
        await engine.dispose()


def fetch(url: str, statement: str, **params: Any) -> list[Any]:
    """Read rows straight from the database, to check what was stored."""
    return run(_fetch(url, statement, params))


@pytest.fixture
def own_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of the test's own (see ``tests/pg_cluster.py``), removed afterwards."""
    import shutil

    from tests.pg_cluster import PG_BIN, OwnPostgres

    if PG_BIN is None or (shutil.which("runuser") is None and os.geteuid() == 0):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = OwnPostgres()
    try:
        yield cluster
    finally:
        cluster.remove()
