"""``windi-chat users ...`` and ``windi-chat stats``, run as the real command against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api import PASSWORD, Api
from tests.conftest import TEST_SECRET, LiveServer, fetch, start_server, stop_server
from tests.wsclient import open_socket, receive_until_closed

NEW_PASSWORD = "a brand new password"
UNKNOWN = "nobody-at-all@example.com"


def windi_chat(
    database_url: str, cwd: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "WINDI_DATABASE_URL": database_url,
        "WINDI_JWT_SECRET": TEST_SECRET,
        "WINDI_ARGON2_TIME_COST": "1",
        "WINDI_ARGON2_MEMORY_KIB": "1024",
        "COLUMNS": "200",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "windi_chat.cli", *args],
        input=stdin,
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_users_create_makes_an_account_that_can_log_in(api: Api, database_url: str, tmp_path: Path) -> None:
    email = "Operator.Made@Example.com"
    result = windi_chat(
        database_url, tmp_path, "users", "create", "--email", email, "--name", "Op", "--password-stdin",
        stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Created account" in result.stdout
    assert api.login(email.lower())["access_token"]


def test_users_create_refuses_a_taken_email_and_a_short_password(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    (ada,) = api.people("Ada")
    taken = windi_chat(
        database_url, tmp_path, "users", "create", "--email", ada.email, "--name", "Ada", "--password-stdin",
        stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    assert taken.returncode == 1
    assert "already" in taken.stderr.lower()
    create = ("users", "create", "--email", "s@example.com", "--name", "S", "--password-stdin")
    short = windi_chat(database_url, tmp_path, *create, stdin="short\n")
    assert short.returncode == 1
    assert "Password" in short.stderr


def test_users_set_password_replaces_it_and_ends_every_session(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    (ada,) = api.people("Ada")
    result = windi_chat(
        database_url,
        tmp_path,
        "users",
        "set-password",
        ada.email,
        "--password-stdin",
        stdin=f"{NEW_PASSWORD}\n",
    )
    assert result.returncode == 0, result.stderr
    assert "1 sessions ended" in result.stdout
    api.me(ada, expect=401)
    api.login(ada.email, PASSWORD, expect=401)
    assert api.login(ada.email, NEW_PASSWORD)["access_token"]


def test_users_revoke_sessions_ends_them_all(api: Api, database_url: str, tmp_path: Path) -> None:
    (ada,) = api.people("Ada")
    phone = api.session_of(ada)
    result = windi_chat(database_url, tmp_path, "users", "revoke-sessions", ada.email)
    assert result.returncode == 0, result.stderr
    assert "2 sessions ended" in result.stdout
    api.me(ada, expect=401)
    api.me(phone, expect=401)
    assert api.login(ada.email)["access_token"]  # the password still works


def test_users_delete_deletes_the_account_and_keeps_its_messages(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "kept")
    result = windi_chat(database_url, tmp_path, "users", "delete", ada.email, "--yes")
    assert result.returncode == 0, result.stderr
    api.login(ada.email, expect=401)
    (message,) = api.history(bob, chat_id)
    assert message["sender"] == {"id": None, "name": "Deleted account"}
    assert fetch(database_url, "SELECT id FROM users WHERE email = :email", email=ada.email) == []


def test_users_delete_asks_first_and_stops_on_no(api: Api, database_url: str, tmp_path: Path) -> None:
    (ada,) = api.people("Ada")
    result = windi_chat(database_url, tmp_path, "users", "delete", ada.email, stdin="n\n")
    assert result.returncode == 1
    assert api.me(ada)["id"] == ada.id


@pytest.mark.parametrize(
    "command",
    [("set-password", "--password-stdin"), ("revoke-sessions",), ("delete", "--yes")],
    ids=lambda command: command[0],
)
def test_an_unknown_email_is_a_clear_error(
    database_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    name, *options = command
    result = windi_chat(database_url, tmp_path, "users", name, UNKNOWN, *options, stdin=f"{NEW_PASSWORD}\n")
    assert result.returncode == 1
    assert f"No account has the email '{UNKNOWN}'" in result.stderr


def test_stats_counts_accounts_chats_and_messages_and_the_servers_open_sockets(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    with live_server.http() as http:
        api = Api(http)
        ada, bob = api.people("Ada", "Bob")
        chat_id = api.private_chat(ada, bob)["id"]
        api.send(ada, chat_id, "one")
    counts = {
        table: fetch(database_url, f"SELECT count(*) AS n FROM {table}")[0].n  # noqa: S608 - a fixed name
        for table in ("users", "chats", "messages")
    }
    with open_socket(live_server.ws_url, chat_id, ada.token):
        result = windi_chat(database_url, tmp_path, "stats", "--server", live_server.base_url)
    assert result.returncode == 0, result.stderr
    assert f"accounts: {counts['users']}\n" in result.stdout
    assert f"chats: {counts['chats']}\n" in result.stdout
    assert f"messages: {counts['messages']}\n" in result.stdout
    assert "open sockets: 1 " in result.stdout


def test_stats_says_when_no_server_answers(database_url: str, tmp_path: Path) -> None:
    result = windi_chat(database_url, tmp_path, "stats", "--server", "http://127.0.0.1:1")
    assert result.returncode == 0, result.stderr
    assert "open sockets: unknown" in result.stdout


def test_revoke_sessions_closes_the_sockets_of_a_running_server_at_once(
    database_url: str, tmp_path: Path
) -> None:
    """Delivery on Redis: the command publishes the revocation, and the server closes the socket with 4401."""
    channels = {"WINDI_CHANNELS_URL": "redis://127.0.0.1:6379/0"}
    server = start_server(database_url, tmp_path / "server.log", channels)
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]
        with open_socket(server.ws_url, chat_id, ada.token) as socket:
            result = windi_chat(database_url, tmp_path, "users", "revoke-sessions", ada.email, **channels)
            assert result.returncode == 0, result.stderr
            assert receive_until_closed(socket)[1] == 4401
    finally:
        stop_server(server)
