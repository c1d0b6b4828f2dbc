"""Accounts through the API: registering, logging in, rehashing, finding people, the rate limit."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import (
    PASSWORD,
    Account,
    fetch,
    make_settings,
    register_and_login,
    run,
    start_server,
    stop_server,
    wait_for,
)
from windi_chat.app import create_app
from windi_chat.models import User


def register(http: Any, name: str, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/register", json={"name": name, "email": email, "password": password})


def login(http: Any, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/login", data={"username": email, "password": password})


def stored_password_hash(database_url: str, email: str) -> str:
    rows = fetch(database_url, "SELECT password_hash FROM users WHERE email = :email", email=email)
    return str(rows[0][0])


def count_users(database_url: str, email: str) -> int:
    return int(fetch(database_url, "SELECT count(*) FROM users WHERE email = :email", email=email)[0][0])


@contextmanager
def account_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture ``windi_chat.accounts`` records.

    Enter it after the app is created: the app's logging config stops ``windi_chat`` propagating to
    pytest's root handler and clears the handlers of its child loggers.
    """
    logger = logging.getLogger("windi_chat.accounts")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(level)


# --- Registration ---


def test_register_returns_the_account_and_never_the_password(client: TestClient[Any]) -> None:
    response = register(client, "Ada Lovelace", "ada@example.com")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "email"}
    assert body["name"] == "Ada Lovelace"
    assert body["email"] == "ada@example.com"
    assert isinstance(body["id"], int)
    assert "password" not in body
    assert "password_hash" not in body


def test_register_stores_and_returns_the_email_in_lower_case(
    client: TestClient[Any], database_url: str
) -> None:
    response = register(client, "Ada", "Ada@Example.COM")
    assert response.json()["email"] == "ada@example.com"
    assert count_users(database_url, "ada@example.com") == 1


def test_register_with_an_email_taken_in_another_case_is_409(client: TestClient[Any]) -> None:
    assert register(client, "Ada", "Ada@Example.com").status_code == 201
    response = register(client, "Other Ada", "ada@example.com")
    assert response.status_code == 409
    assert response.json()["detail"]


def test_register_trims_the_name(client: TestClient[Any]) -> None:
    assert register(client, "  Ada  ", "ada@example.com").json()["name"] == "Ada"


@pytest.mark.parametrize("name", ["A", "x" * 100], ids=["1-char", "100-chars"])
def test_register_accepts_names_of_1_to_100_characters(client: TestClient[Any], name: str) -> None:
    assert register(client, name, "ada@example.com").status_code == 201


@pytest.mark.parametrize(
    "password", ["p" * 8, "p" * 128, "пароль-пароль"], ids=["8-chars", "128-chars", "non-ascii"]
)
def test_register_accepts_passwords_of_8_to_128_characters(client: TestClient[Any], password: str) -> None:
    assert register(client, "Ada", "ada@example.com", password).status_code == 201
    assert login(client, "ada@example.com", password).status_code == 200


def assert_bad_request(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail.strip()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "", "email": "ada@example.com", "password": PASSWORD}, id="empty-name"),
        pytest.param({"name": "   ", "email": "ada@example.com", "password": PASSWORD}, id="blank-name"),
        pytest.param(
            {"name": "x" * 101, "email": "ada@example.com", "password": PASSWORD}, id="101-char-name"
        ),
        pytest.param({"name": "Ada", "email": "ada@example.com", "password": "p" * 7}, id="7-char-password"),
        pytest.param(
            {"name": "Ada", "email": "ada@example.com", "password": "p" * 129}, id="129-char-password"
        ),
        pytest.param({"name": "Ada", "email": "no-at-sign", "password": PASSWORD}, id="email-no-at"),
        pytest.param({"name": "Ada", "email": "a@b", "password": PASSWORD}, id="email-no-dot"),
        pytest.param({"name": "Ada", "email": "a b@example.com", "password": PASSWORD}, id="email-space"),
        pytest.param({"email": "ada@example.com", "password": PASSWORD}, id="missing-name"),
        pytest.param({"name": "Ada", "password": PASSWORD}, id="missing-email"),
        pytest.param({"name": "Ada", "email": "ada@example.com"}, id="missing-password"),
        pytest.param({"name": 1, "email": "ada@example.com", "password": PASSWORD}, id="name-not-a-string"),
        pytest.param(
            {"name": "Ada", "email": "ada@example.com", "password": PASSWORD, "is_admin": True},
            id="unknown-field",
        ),
    ],
)
def test_register_rejects_invalid_input_with_a_readable_400(
    client: TestClient[Any], body: dict[str, Any]
) -> None:
    assert_bad_request(client.post("/register", json=body))


def test_register_rejects_malformed_json_with_a_readable_400(client: TestClient[Any]) -> None:
    response = client.post(
        "/register", content=b'{"name": "Ada", "email": ', headers={"Content-Type": "application/json"}
    )
    assert_bad_request(response)


def test_rejected_registrations_create_no_account(client: TestClient[Any], database_url: str) -> None:
    register(client, "Ada", "ada@example.com", "p" * 7)
    assert count_users(database_url, "ada@example.com") == 0


async def _hold_an_uncommitted_insert(
    database_url: str, email: str, inserted: threading.Event, release: threading.Event
) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(insert(User).values(name="First", email=email, password_hash="x"))
            inserted.set()
            await asyncio.to_thread(release.wait, 30)
            await connection.commit()
    finally:
        await engine.dispose()


def sessions_waiting_for_a_lock(database_url: str) -> int:
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return int(fetch(database_url, query)[0][0])


def test_a_registration_racing_an_uncommitted_one_for_the_same_email_is_409(pg_database_url: str) -> None:
    """The existence check passes, then the insert meets the other transaction's row: 409, not 500."""
    inserted, release = threading.Event(), threading.Event()
    with (
        TestClient(app=create_app(make_settings(pg_database_url))) as client,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        holder = pool.submit(
            run, _hold_an_uncommitted_insert(pg_database_url, "ada@example.com", inserted, release)
        )
        try:
            wait_for(inserted.is_set)
            request = pool.submit(register, client, "Second", "ada@example.com")
            # The request's insert now waits on the holder's uncommitted row (or, if broken, is done).
            wait_for(lambda: request.done() or sessions_waiting_for_a_lock(pg_database_url))
        finally:
            release.set()
        holder.result()
        response = request.result()
    assert response.status_code == 409, response.text
    assert count_users(pg_database_url, "ada@example.com") == 1


def register_together(http: httpx.Client, email: str, names: list[str]) -> list[int]:
    """Send one registration per name for the same email, released at the same moment."""
    barrier = threading.Barrier(len(names))

    def attempt(name: str) -> int:
        barrier.wait(timeout=10)
        return register(http, name, email).status_code

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return sorted(pool.map(attempt, names))


def test_concurrent_registrations_of_one_email_give_one_201_and_one_409(
    pg_database_url: str, tmp_path: Path
) -> None:
    server = start_server(pg_database_url, tmp_path / "server.log")
    try:
        with server.http() as http:
            outcomes = [
                register_together(http, f"racer{n}@example.com", ["First", "Second"]) for n in range(5)
            ]
    finally:
        stop_server(server)
    assert outcomes == [[201, 409]] * 5
    assert "Traceback" not in server.log()


# --- Login ---


def test_login_returns_a_bearer_token_that_identifies_the_user(client: TestClient[Any]) -> None:
    user_id = register(client, "Ada", "ada@example.com").json()["id"]
    response = login(client, "ada@example.com")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 86_400
    me = client.get("/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["id"] == user_id


def test_login_ignores_the_case_of_the_email(client: TestClient[Any]) -> None:
    register(client, "Ada", "ada@example.com")
    assert login(client, "ADA@Example.Com").status_code == 200


def test_login_with_a_wrong_password_or_an_unknown_email_gives_the_same_401(client: TestClient[Any]) -> None:
    register(client, "Ada", "ada@example.com")
    wrong_password = login(client, "ada@example.com", "not the password")
    unknown_email = login(client, "nobody@example.com")
    assert wrong_password.status_code == 401
    assert unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()


def test_login_wants_the_oauth2_form_fields(client: TestClient[Any]) -> None:
    register(client, "Ada", "ada@example.com")
    assert client.post("/login", data={"username": "ada@example.com"}).status_code == 400


def test_login_rehashes_a_password_hashed_with_outdated_parameters(database_url: str) -> None:
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=1))) as old_server:
        register(old_server, "Ada", "ada@example.com")
    old_hash = stored_password_hash(database_url, "ada@example.com")
    assert "t=1," in old_hash

    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=2))) as new_server:
        assert login(new_server, "ada@example.com").status_code == 200
        new_hash = stored_password_hash(database_url, "ada@example.com")
        assert new_hash != old_hash
        assert "t=2," in new_hash
        assert login(new_server, "ada@example.com").status_code == 200
        assert login(new_server, "ada@example.com", "not the password").status_code == 401


def test_login_keeps_a_hash_made_with_current_parameters(client: TestClient[Any], database_url: str) -> None:
    register(client, "Ada", "ada@example.com")
    before = stored_password_hash(database_url, "ada@example.com")
    login(client, "ada@example.com")
    assert stored_password_hash(database_url, "ada@example.com") == before


def test_a_failed_login_does_not_rehash(database_url: str) -> None:
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=1))) as old_server:
        register(old_server, "Ada", "ada@example.com")
    old_hash = stored_password_hash(database_url, "ada@example.com")
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=2))) as new_server:
        assert login(new_server, "ada@example.com", "not the password").status_code == 401
    assert stored_password_hash(database_url, "ada@example.com") == old_hash


# --- The caller and finding people ---


def test_users_me_returns_the_caller(client: TestClient[Any], make_account: Any) -> None:
    ada: Account = make_account("Ada Lovelace", "ada@example.com")
    make_account("Alan Turing")
    response = client.get("/users/me", headers=ada.headers)
    assert response.status_code == 200
    assert response.json() == {"id": ada.id, "name": "Ada Lovelace", "email": "ada@example.com"}


def search(client: TestClient[Any], caller: Account, **params: Any) -> list[str]:
    response = client.get("/users", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return [user["name"] for user in response.json()]


def test_search_finds_people_by_name_prefix_ignoring_case(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    register(client, "Adam Smith", "smith@example.com")
    register(client, "Bob", "bob@example.com")
    assert search(client, me, search="aDA") == ["Adam Smith"]


def test_search_finds_people_by_email_prefix_ignoring_case(
    client: TestClient[Any], make_account: Any
) -> None:
    me = make_account("Me", "me@example.com")
    register(client, "Grace Hopper", "admiral@navy.example")
    register(client, "Bob", "bob@example.com")
    assert search(client, me, search="ADMIRAL@N") == ["Grace Hopper"]


def test_search_matches_the_start_not_the_middle(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    register(client, "Adam Smith", "adam@example.com")
    assert search(client, me, search="smith") == []
    assert search(client, me, search="example") == []


def test_search_returns_id_name_and_email_only(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    adam_id = register(client, "Adam", "adam@example.com").json()["id"]
    response = client.get("/users", params={"search": "adam"}, headers=me.headers)
    assert response.json() == [{"id": adam_id, "name": "Adam", "email": "adam@example.com"}]


def test_search_leaves_out_the_caller(client: TestClient[Any], make_account: Any) -> None:
    ada = make_account("Ada", "ada@example.com")
    register(client, "Adam", "adam@example.com")
    assert search(client, ada, search="ada") == ["Adam"]


def test_search_respects_the_limit(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    for name in ("Anna", "Anne", "Annika"):
        register(client, name, f"{name.lower()}@example.com")
    assert len(search(client, me, search="ann")) == 3
    assert len(search(client, me, search="ann", limit=2)) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"search": "a", "limit": 0},
        {"search": "a", "limit": 51},
        {"search": "a", "limit": "x"},
        {"search": ""},
        {},
    ],
    ids=["limit-0", "limit-51", "limit-not-a-number", "empty-search", "no-search"],
)
def test_search_rejects_bad_parameters_with_400(
    client: TestClient[Any], make_account: Any, params: dict[str, Any]
) -> None:
    me = make_account("Me", "me@example.com")
    assert_bad_request(client.get("/users", params=params, headers=me.headers))


def test_search_accepts_limits_1_and_50(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    register(client, "Anna", "anna@example.com")
    assert search(client, me, search="anna", limit=1) == ["Anna"]
    assert search(client, me, search="anna", limit=50) == ["Anna"]


def test_percent_in_a_search_is_literal(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    register(client, "100% Real", "real@example.com")
    register(client, "1000 Monkeys", "monkeys@example.com")
    assert search(client, me, search="100%") == ["100% Real"]
    assert search(client, me, search="%") == []


def test_underscore_in_a_search_is_literal(client: TestClient[Any], make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    register(client, "A_B", "ab@example.com")
    register(client, "AxB", "axb@example.com")
    assert search(client, me, search="a_") == ["A_B"]
    assert search(client, me, search="_") == []


# --- Rate limit on register and login ---


@pytest.fixture
def limited_client(database_url: str) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(make_settings(database_url, auth_rate_limit=3))) as test_client:
        yield test_client


def test_the_fourth_login_within_a_minute_is_429_with_retry_after(limited_client: TestClient[Any]) -> None:
    statuses = [login(limited_client, "ada@example.com").status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    response = login(limited_client, "ada@example.com")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_the_fourth_registration_within_a_minute_is_429(limited_client: TestClient[Any]) -> None:
    statuses = [register(limited_client, "Ada", f"ada{n}@example.com").status_code for n in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert "Retry-After" in register(limited_client, "Ada", "ada9@example.com").headers


def test_the_auth_rate_limit_leaves_other_endpoints_alone(limited_client: TestClient[Any]) -> None:
    ada = register_and_login(limited_client, "Ada")
    login(limited_client, ada.email, "not the password")
    assert login(limited_client, ada.email).status_code == 429
    for _ in range(5):
        assert limited_client.get("/health").status_code == 200
        assert limited_client.get("/users/me", headers=ada.headers).status_code == 200
        assert limited_client.get("/users", params={"search": "x"}, headers=ada.headers).status_code == 200


def test_no_rate_limit_when_it_is_zero(client: TestClient[Any]) -> None:
    statuses = {login(client, "ada@example.com").status_code for _ in range(10)}
    assert statuses == {401}


# --- What gets logged ---


def test_registration_is_logged_with_the_user_id_and_not_the_password(
    client: TestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with account_logs(caplog) as logs:
        user_id = register(client, "Ada", "ada@example.com").json()["id"]
    assert f"User registered: user_id={user_id}" in logs.messages
    assert PASSWORD not in logs.text


def test_login_success_and_failure_are_logged_with_the_user_id_and_no_secret(
    client: TestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with account_logs(caplog) as logs:
        user_id = register(client, "Ada", "ada@example.com").json()["id"]
        token = login(client, "ada@example.com").json()["access_token"]
        login(client, "ada@example.com", "a wrong password")
        login(client, "nobody@example.com")
    assert f"Login succeeded: user_id={user_id}" in logs.messages
    assert f"Login failed: user_id={user_id}" in logs.messages
    assert "Login failed: unknown email" in logs.messages
    for secret in (PASSWORD, "a wrong password", token):
        assert secret not in logs.text


def test_a_rehash_is_logged_with_the_user_id(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=1))) as old_server:
        user_id = register(old_server, "Ada", "ada@example.com").json()["id"]
    new_app = create_app(make_settings(database_url, argon2_time_cost=2))
    with TestClient(app=new_app) as new_server, account_logs(caplog) as logs:
        login(new_server, "ada@example.com")
    assert f"Password hash upgraded: user_id={user_id}" in logs.messages
