"""Emails and passwords: one normal form per address, passwords that are more than whitespace, and a
registration that answers 503 (never 409) when the database goes away under it."""

from __future__ import annotations

import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.api import PASSWORD, Account, Api
from tests.conftest import fetch, run, start_server, stop_server, wait_for
from tests.test_accounts import _hold_an_uncommitted_insert, sessions_waiting_for_a_lock

# "Émile" spelt with one code point for É (NFC) and with E plus a combining accent (NFD).
NFC_EMAIL = unicodedata.normalize("NFC", "émile@example.com")
NFD_EMAIL = unicodedata.normalize("NFD", "émile@example.com")


def stored_emails(database_url: str) -> list[str]:
    return [row[0] for row in fetch(database_url, "SELECT email FROM users ORDER BY id")]


def test_nfc_and_nfd_spellings_of_one_email_are_one_account(api: Api, database_url: str) -> None:
    assert NFC_EMAIL != NFD_EMAIL
    api.register("Émile", NFC_EMAIL, expect=201)
    api.register("Another Émile", NFD_EMAIL, expect=409)
    api.login(NFD_EMAIL, expect=200)
    assert stored_emails(database_url) == [NFC_EMAIL]


def test_emails_are_case_folded_and_nfkc_normalised_before_they_are_stored(
    api: Api, database_url: str
) -> None:
    # Full-width letters and a sharp s: NFKC makes the first plain, case folding makes "ß" "ss".
    body = api.register("Ada", "\uff21\uff24\uff21.Straße@Example.com", expect=201)
    assert body["email"] == "ada.strasse@example.com"
    assert stored_emails(database_url) == ["ada.strasse@example.com"]
    api.login("ADA.STRASSE@example.com", expect=200)
    api.register("Ada again", "ada.strasse@EXAMPLE.com", expect=409)


def test_an_email_that_folding_makes_too_long_is_400(api: Api, database_url: str) -> None:
    email = "İ" * 200 + "@example.com"  # 212 characters; case folding doubles each "İ"
    response = api.register("Ada", email, expect=None)
    assert response.status_code == 400, response.text
    assert "longer than 320" in response.json()["detail"]
    assert stored_emails(database_url) == []
    assert api.login(email, expect=None).status_code in (400, 401)


def test_search_by_email_finds_the_normalised_form(api: Api, make_account: Any) -> None:
    me: Account = make_account("Me", "me@example.com")
    api.register("Émile", NFC_EMAIL)
    found = api.call("GET", "/users", me, params={"search": NFD_EMAIL.upper()}, expect=200)
    assert [person["name"] for person in found] == ["Émile"]


@pytest.mark.parametrize(
    "password",
    [" " * 8, " " * 20, "\t\n \u3000" * 4, "abc     def", "       x"],
    ids=["8-spaces", "20-spaces", "mixed-whitespace", "6-visible", "1-visible"],
)
def test_a_password_needs_8_characters_that_are_not_whitespace(
    api: Api, database_url: str, password: str
) -> None:
    response = api.register("Ada", "ada@example.com", password, expect=None)
    assert response.status_code == 400, response.text
    assert stored_emails(database_url) == []


def test_a_password_with_8_visible_characters_among_spaces_is_accepted(api: Api) -> None:
    api.register("Ada", "ada@example.com", " a b c d e f g h ", expect=201)
    api.login("ada@example.com", " a b c d e f g h ", expect=200)


def test_a_new_password_of_whitespace_is_refused_and_the_old_one_still_works(
    api: Api, make_account: Any
) -> None:
    ada: Account = make_account("Ada", "ada@example.com")
    api.change_password(ada, PASSWORD, " " * 12, expect=400)
    api.login("ada@example.com", PASSWORD, expect=200)


def _terminate_backends_waiting_for_a_lock(database_url: str) -> None:
    fetch(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()",
    )


def test_a_registration_whose_connection_is_cut_is_503_not_409(pg_database_url: str, tmp_path: Path) -> None:
    """The insert waits on another transaction's row for the same email; its session is then killed."""
    inserted, release = threading.Event(), threading.Event()
    server = start_server(pg_database_url, tmp_path / "server.log")
    try:
        with server.http() as http, ThreadPoolExecutor(max_workers=2) as pool:
            holder = pool.submit(
                run, _hold_an_uncommitted_insert(pg_database_url, "cut@example.com", inserted, release)
            )
            try:
                wait_for(inserted.is_set)
                request = pool.submit(Api(http).register, "Second", "cut@example.com", expect=None)
                wait_for(lambda: request.done() or sessions_waiting_for_a_lock(pg_database_url))
                _terminate_backends_waiting_for_a_lock(pg_database_url)
                response = request.result(timeout=30)
            finally:
                release.set()
            holder.result()
    finally:
        stop_server(server)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "3"
    assert "Traceback" not in server.log()


# --- Emails stored before the normal form ---


async def _migrate_a_database_with_old_emails(url: str) -> list[tuple[str, str]]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from windi_chat.database import migrate

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await migrate(engine, "0002")
        async with engine.begin() as connection:
            for name, email in (
                ("Plain", "plain@example.com"),
                ("Sharp", "straße@example.com"),
                ("Decomposed", NFD_EMAIL),
                ("Composed", NFC_EMAIL),  # folds to the same address as the one before
            ):
                await connection.execute(
                    text(
                        "INSERT INTO users (name, email, password_hash, created_at) VALUES (:n, :e, 'x', :t)"
                    ),
                    {"n": name, "e": email, "t": "2026-01-01 00:00:00.000000"},
                )
        await migrate(engine)
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT name, email FROM users ORDER BY id"))
            return [(row[0], row[1]) for row in rows]
    finally:
        await engine.dispose()


def test_the_migration_brings_stored_emails_to_the_normal_form_unless_two_collide(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    assert run(_migrate_a_database_with_old_emails(url)) == [
        ("Plain", "plain@example.com"),
        ("Sharp", "strasse@example.com"),
        ("Decomposed", NFD_EMAIL),  # left as it was: its normal form belongs to another account
        ("Composed", NFC_EMAIL),
    ]
