"""The service around the API: health, a dead database, migrations, the docs, the CLI, log lines."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from litestar.testing import TestClient
from sqlalchemy import inspect, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import command
from tests.conftest import (
    TEST_SECRET,
    _migrate,
    _recreate_pg_database,
    make_settings,
    run,
    start_server,
    stop_server,
)
from windi_chat.app import create_app
from windi_chat.database import migrations_path
from windi_chat.logs import JSONFormatter
from windi_chat.security import TokenCodec

DEAD_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/x"
APP_TABLES = {"users", "chats", "chat_members", "messages", "sessions", "refresh_tokens"}


# --- Health ---


def test_health_is_ok_when_the_database_answers(client: TestClient[Any]) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


class CuttableLink:
    """A TCP forwarder to the database whose cable a test can pull, as when the database host goes away.

    After ``cut()`` the open connections are broken and the port refuses new ones.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, upstream]
                if self._cut:
                    self._close_all()
                    return
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def _close_all(self) -> None:
        for connection in self._sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def cut(self) -> None:
        with self._lock:
            if self._cut:
                return
            self._cut = True
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._close_all()


@pytest.fixture
def database_link(pg_database_url: str) -> Iterator[tuple[CuttableLink, str]]:
    """A link to the PostgreSQL test database, and the database URL that goes through it."""
    url = make_url(pg_database_url)
    link = CuttableLink(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield link, url.set(host="127.0.0.1", port=link.port).render_as_string(hide_password=False)
    finally:
        link.cut()


@pytest.fixture
def client_losing_its_database(database_link: tuple[CuttableLink, str]) -> Iterator[TestClient[Any]]:
    """An app that started with its database, which has just become unreachable."""
    link, database_url = database_link
    with TestClient(app=create_app(make_settings(database_url))) as test_client:
        assert test_client.get("/health").status_code == 200
        link.cut()
        yield test_client


def test_health_is_503_when_the_database_is_unreachable(client_losing_its_database: TestClient[Any]) -> None:
    response = client_losing_its_database.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_an_authenticated_call_is_503_not_500_when_the_database_is_unreachable(
    client_losing_its_database: TestClient[Any],
) -> None:
    token = TokenCodec.create(secret=TEST_SECRET, ttl=timedelta(minutes=5)).issue(1, "session-1")
    response = client_losing_its_database.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.json()["detail"]


def test_register_and_login_are_503_not_500_when_the_database_is_unreachable(
    client_losing_its_database: TestClient[Any],
) -> None:
    body = {"name": "Ada", "email": "ada@example.com", "password": "p" * 8}
    assert client_losing_its_database.post("/register", json=body).status_code == 503
    form = {"username": "ada@example.com", "password": "p" * 8}
    assert client_losing_its_database.post("/login", data=form).status_code == 503


# --- Migrations ---


def alembic_head() -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_path()))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _schema(connection: Connection) -> tuple[set[str], list[str]]:
    tables = set(inspect(connection).get_table_names())
    versions = []
    if "alembic_version" in tables:
        versions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    return tables, versions


async def _read_schema(database_url: str) -> tuple[set[str], list[str]]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_schema)
    finally:
        await engine.dispose()


def read_schema(database_url: str) -> tuple[set[str], list[str]]:
    """The tables in the database and the revisions alembic recorded."""
    tables, versions = run(_read_schema(database_url))
    return tables, versions


def _downgrade_to_base(connection: Connection) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def _downgrade(database_url: str) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_downgrade_to_base)
            await connection.commit()
    finally:
        await engine.dispose()


def empty_pg_database(postgres_url: str, suffix: str) -> str:
    """A new, empty database named after the test one (``windi_test_migrate``), which it leaves alone."""
    test_database = make_url(postgres_url)
    url = test_database.set(database=f"{test_database.database}_{suffix}").render_as_string(
        hide_password=False
    )
    run(_recreate_pg_database(url))
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database with no schema at all, on each dialect."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    return empty_pg_database(request.getfixturevalue("postgres_url"), "migrate")


def test_migrating_an_empty_database_creates_the_schema_at_head(empty_database_url: str) -> None:
    assert read_schema(empty_database_url) == (set(), [])
    run(_migrate(empty_database_url))
    tables, versions = read_schema(empty_database_url)
    assert tables >= APP_TABLES | {"alembic_version"}
    assert versions == [alembic_head()]


def test_migrating_twice_changes_nothing(empty_database_url: str) -> None:
    run(_migrate(empty_database_url))
    first = read_schema(empty_database_url)
    run(_migrate(empty_database_url))
    assert read_schema(empty_database_url) == first


def test_downgrade_to_base_and_upgrade_again(empty_database_url: str) -> None:
    run(_migrate(empty_database_url))
    run(_downgrade(empty_database_url))
    tables, versions = read_schema(empty_database_url)
    assert not tables & APP_TABLES
    assert versions == []
    run(_migrate(empty_database_url))
    tables, versions = read_schema(empty_database_url)
    assert tables >= APP_TABLES
    assert versions == [alembic_head()]


def environment(**windi: str) -> dict[str, str]:
    """The test process's environment without its ``WINDI_*`` variables, plus ``windi``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("WINDI_")}, **windi}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_for_processes(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    return empty_pg_database(request.getfixturevalue("postgres_url"), "migrate_race")


def test_two_migrate_commands_started_together_both_succeed(
    fresh_database_for_processes: str, tmp_path: Path
) -> None:
    env = environment(WINDI_DATABASE_URL=fresh_database_for_processes, WINDI_JWT_SECRET=TEST_SECRET)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "windi_chat.cli", "migrate"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    tables, versions = read_schema(fresh_database_for_processes)
    assert tables >= APP_TABLES
    assert versions == [alembic_head()]


def test_the_server_migrates_on_start_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINDI_MIGRATE_ON_START", raising=False)
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    server = start_server(database_url, tmp_path / "server.log")
    stop_server(server)
    tables, versions = read_schema(database_url)
    assert tables >= APP_TABLES
    assert versions == [alembic_head()]


def test_the_server_does_not_migrate_when_told_not_to(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    server = start_server(database_url, tmp_path / "server.log", {"WINDI_MIGRATE_ON_START": "false"})
    stop_server(server)
    assert read_schema(database_url) == (set(), [])


# --- Docs ---


def test_the_docs_page_is_html(client: TestClient[Any]) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()


@pytest.fixture
def openapi(client: TestClient[Any]) -> dict[str, Any]:
    response = client.get("/docs/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def test_the_openapi_document_is_titled_windi_chat(openapi: dict[str, Any]) -> None:
    assert openapi["info"]["title"] == "WinDI Chat"


def test_the_openapi_document_lists_the_account_and_health_paths(openapi: dict[str, Any]) -> None:
    assert {"/register", "/login", "/users/me", "/users", "/health"} <= set(openapi["paths"])


def test_the_openapi_document_has_an_oauth2_password_scheme_logging_in_at_login(
    openapi: dict[str, Any],
) -> None:
    schemes = openapi["components"]["securitySchemes"].values()
    token_urls = [
        scheme["flows"]["password"]["tokenUrl"]
        for scheme in schemes
        if scheme["type"] == "oauth2" and "password" in scheme.get("flows", {})
    ]
    assert token_urls == ["/login"]


def test_the_openapi_document_has_the_accounts_tag(openapi: dict[str, Any]) -> None:
    assert "accounts" in [tag["name"] for tag in openapi["tags"]]
    assert openapi["paths"]["/register"]["post"]["tags"] == ["accounts"]


def test_the_openapi_document_shows_409_on_register_and_401_on_login(openapi: dict[str, Any]) -> None:
    assert "409" in openapi["paths"]["/register"]["post"]["responses"]
    assert "401" in openapi["paths"]["/login"]["post"]["responses"]


def test_the_openapi_document_marks_register_login_and_health_as_open(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    for path, method in (("/register", "post"), ("/login", "post"), ("/health", "get")):
        assert paths[path][method]["security"] == [{}], path
    assert paths["/users/me"]["get"].get("security", openapi["security"]) != [{}]


# --- The command line ---


def test_cli_help_lists_run_migrate_demo_and_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "windi_chat.cli", "--help"],
        env=environment(COLUMNS="200", WINDI_JWT_SECRET=TEST_SECRET),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command_name in ("run", "migrate", "demo", "database"):
        assert f" {command_name} " in result.stdout, command_name


# --- Log lines ---


def test_the_json_formatter_writes_one_valid_json_object_per_line() -> None:
    record = logging.LogRecord(
        "windi_chat.accounts", logging.WARNING, __file__, 1, 'said "%s"\nthen left', ("hi",), None
    )
    line = JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "windi_chat.accounts"
    assert entry["message"] == 'said "hi"\nthen left'
    assert entry["time"].endswith("+00:00")


def test_the_json_formatter_includes_the_traceback_with_tokens_redacted() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        record = logging.LogRecord("windi_chat", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    entry = json.loads(JSONFormatter().format(record))
    assert "ValueError" in entry["exc_info"]
    assert token not in entry["exc_info"]


def test_a_production_server_logs_json_lines(tmp_path: Path) -> None:
    server = start_server(
        f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        tmp_path / "server.log",
        {"WINDI_ENV": "production", "WINDI_ALLOW_SQLITE_IN_PRODUCTION": "true", "WINDI_LOG_LEVEL": "INFO"},
    )
    try:
        assert httpx.get(f"{server.base_url}/health", timeout=5).status_code == 200
    finally:
        stop_server(server)
    lines = server.log().splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]
    assert any(entry["logger"] == "windi_chat.app" and "ready" in entry["message"] for entry in entries)
