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

from tests.api import PASSWORD, Account, Api
from tests.conftest import fetch, make_settings, run, start_server, stop_server, wait_for
from windi_chat.app import create_app
from windi_chat.models import User


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


def test_register_returns_the_account_and_never_the_password(api: Api) -> None:
    body = api.register("Ada Lovelace", "ada@example.com", expect=201)
    assert set(body) == {"id", "name", "email"}
    assert body["name"] == "Ada Lovelace"
    assert body["email"] == "ada@example.com"
    assert isinstance(body["id"], int)
    assert "password" not in body
    assert "password_hash" not in body


def test_register_stores_and_returns_the_email_in_lower_case(api: Api, database_url: str) -> None:
    assert api.register("Ada", "Ada@Example.COM")["email"] == "ada@example.com"
    assert count_users(database_url, "ada@example.com") == 1


def test_register_with_an_email_taken_in_another_case_is_409(api: Api) -> None:
    api.register("Ada", "Ada@Example.com", expect=201)
    assert api.register("Other Ada", "ada@example.com", expect=409)["detail"]


def test_register_trims_the_name(api: Api) -> None:
    assert api.register("  Ada  ", "ada@example.com")["name"] == "Ada"


@pytest.mark.parametrize("name", ["A", "x" * 100], ids=["1-char", "100-chars"])
def test_register_accepts_names_of_1_to_100_characters(api: Api, name: str) -> None:
    api.register(name, "ada@example.com", expect=201)


@pytest.mark.parametrize(
    "password", ["p" * 8, "p" * 128, "пароль-пароль"], ids=["8-chars", "128-chars", "non-ascii"]
)
def test_register_accepts_passwords_of_8_to_128_characters(api: Api, password: str) -> None:
    api.register("Ada", "ada@example.com", password, expect=201)
    api.login("ada@example.com", password, expect=200)


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


def test_rejected_registrations_create_no_account(api: Api, database_url: str) -> None:
    api.register("Ada", "ada@example.com", "p" * 7, expect=400)
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
            request = pool.submit(Api(client).register, "Second", "ada@example.com", expect=None)
            # The request's insert now waits on the holder's uncommitted row (or, if broken, is done).
            wait_for(lambda: request.done() or sessions_waiting_for_a_lock(pg_database_url))
        finally:
            release.set()
        holder.result()
        response = request.result()
    assert response.status_code == 409, response.text
    assert count_users(pg_database_url, "ada@example.com") == 1


def register_together(api: Api, email: str, names: list[str]) -> list[int]:
    """Send one registration per name for the same email, released at the same moment."""
    barrier = threading.Barrier(len(names))

    def attempt(name: str) -> int:
        barrier.wait(timeout=10)
        return api.register(name, email, expect=None).status_code

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return sorted(pool.map(attempt, names))


def test_concurrent_registrations_of_one_email_give_one_201_and_one_409(
    pg_database_url: str, tmp_path: Path
) -> None:
    server = start_server(pg_database_url, tmp_path / "server.log")
    try:
        with server.http() as http:
            outcomes = [
                register_together(Api(http), f"racer{n}@example.com", ["First", "Second"]) for n in range(5)
            ]
    finally:
        stop_server(server)
    assert outcomes == [[201, 409]] * 5
    assert "Traceback" not in server.log()


# --- Login ---


def test_login_returns_a_bearer_token_that_identifies_the_user(client: TestClient[Any], api: Api) -> None:
    user_id = api.register("Ada", "ada@example.com")["id"]
    body = api.login("ada@example.com", expect=200)
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    me = client.get("/users/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["id"] == user_id


def test_login_ignores_the_case_of_the_email(api: Api) -> None:
    api.register("Ada", "ada@example.com")
    api.login("ADA@Example.Com", expect=200)


def test_login_with_a_wrong_password_or_an_unknown_email_gives_the_same_401(api: Api) -> None:
    api.register("Ada", "ada@example.com")
    wrong_password = api.login("ada@example.com", "not the password", expect=401)
    unknown_email = api.login("nobody@example.com", expect=401)
    assert wrong_password == unknown_email


def test_login_wants_the_oauth2_form_fields(api: Api) -> None:
    api.register("Ada", "ada@example.com")
    api.call("POST", "/login", data={"username": "ada@example.com"}, expect=400)


def test_login_rehashes_a_password_hashed_with_outdated_parameters(database_url: str) -> None:
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=1))) as old_server:
        Api(old_server).register("Ada", "ada@example.com")
    old_hash = stored_password_hash(database_url, "ada@example.com")
    assert "t=1," in old_hash

    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=2))) as new_server:
        new_api = Api(new_server)
        new_api.login("ada@example.com", expect=200)
        new_hash = stored_password_hash(database_url, "ada@example.com")
        assert new_hash != old_hash
        assert "t=2," in new_hash
        new_api.login("ada@example.com", expect=200)
        new_api.login("ada@example.com", "not the password", expect=401)


def test_login_keeps_a_hash_made_with_current_parameters(api: Api, database_url: str) -> None:
    api.register("Ada", "ada@example.com")
    before = stored_password_hash(database_url, "ada@example.com")
    api.login("ada@example.com")
    assert stored_password_hash(database_url, "ada@example.com") == before


def test_a_failed_login_does_not_rehash(database_url: str) -> None:
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=1))) as old_server:
        Api(old_server).register("Ada", "ada@example.com")
    old_hash = stored_password_hash(database_url, "ada@example.com")
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=2))) as new_server:
        Api(new_server).login("ada@example.com", "not the password", expect=401)
    assert stored_password_hash(database_url, "ada@example.com") == old_hash


# --- The caller and finding people ---


def test_users_me_returns_the_caller(api: Api, make_account: Any) -> None:
    ada: Account = make_account("Ada Lovelace", "ada@example.com")
    make_account("Alan Turing")
    assert api.call("GET", "/users/me", ada, expect=200) == {
        "id": ada.id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
    }


def search(api: Api, caller: Account, **params: Any) -> list[str]:
    """The names ``GET /users`` finds for ``caller``."""
    return [user["name"] for user in api.call("GET", "/users", caller, params=params, expect=200)]


def test_search_finds_people_by_name_prefix_ignoring_case(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("Adam Smith", "smith@example.com")
    api.register("Bob", "bob@example.com")
    assert search(api, me, search="aDA") == ["Adam Smith"]


def test_search_finds_a_person_by_their_whole_email_ignoring_case(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("Grace Hopper", "admiral@navy.example")
    api.register("Bob", "bob@example.com")
    assert search(api, me, search="ADMIRAL@Navy.example") == ["Grace Hopper"]


def test_search_by_an_email_prefix_finds_no_one(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("Grace Hopper", "admiral@navy.example")
    assert search(api, me, search="admiral@n") == []
    assert search(api, me, search="admiral@navy.exampl") == []


def test_search_matches_the_start_not_the_middle(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("Adam Smith", "adam@example.com")
    assert search(api, me, search="smith") == []
    assert search(api, me, search="example") == []


def test_search_returns_id_and_name_and_never_the_email(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    adam_id = api.register("Adam", "adam@example.com")["id"]
    expected = [{"id": adam_id, "name": "Adam"}]
    assert api.call("GET", "/users", me, params={"search": "adam"}, expect=200) == expected
    assert api.call("GET", "/users", me, params={"search": "adam@example.com"}, expect=200) == expected


def test_search_leaves_out_the_caller(api: Api, make_account: Any) -> None:
    ada = make_account("Ada", "ada@example.com")
    api.register("Adam", "adam@example.com")
    assert search(api, ada, search="ada") == ["Adam"]


def test_search_respects_the_limit(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    for name in ("Anna", "Anne", "Annika"):
        api.register(name, f"{name.lower()}@example.com")
    assert len(search(api, me, search="ann")) == 3
    assert len(search(api, me, search="ann", limit=2)) == 2


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


def test_search_accepts_limits_1_and_50(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("Anna", "anna@example.com")
    assert search(api, me, search="anna", limit=1) == ["Anna"]
    assert search(api, me, search="anna", limit=50) == ["Anna"]


def test_percent_in_a_search_is_literal(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("100% Real", "real@example.com")
    api.register("1000 Monkeys", "monkeys@example.com")
    assert search(api, me, search="100%") == ["100% Real"]
    assert search(api, me, search="%") == []


def test_underscore_in_a_search_is_literal(api: Api, make_account: Any) -> None:
    me = make_account("Me", "me@example.com")
    api.register("A_B", "ab@example.com")
    api.register("AxB", "axb@example.com")
    assert search(api, me, search="a_") == ["A_B"]
    assert search(api, me, search="_") == []


# --- Rate limit on register and login ---


@pytest.fixture
def limited_api(database_url: str) -> Iterator[Api]:
    """The driver over an app that allows three register or login calls a minute."""
    with TestClient(app=create_app(make_settings(database_url, auth_rate_limit=3))) as test_client:
        yield Api(test_client)


def test_the_fourth_login_within_a_minute_is_429_with_retry_after(limited_api: Api) -> None:
    statuses = [limited_api.login("ada@example.com", expect=None).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]
    response = limited_api.login("ada@example.com", expect=None)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_the_fourth_registration_within_a_minute_is_429(limited_api: Api) -> None:
    statuses = [limited_api.register("Ada", f"ada{n}@example.com", expect=None).status_code for n in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert "Retry-After" in limited_api.register("Ada", "ada9@example.com", expect=None).headers


def test_the_auth_rate_limit_leaves_other_endpoints_alone(limited_api: Api) -> None:
    ada = limited_api.account("Ada")
    limited_api.login(ada.email, "not the password", expect=401)
    limited_api.login(ada.email, expect=429)
    for _ in range(5):
        limited_api.call("GET", "/health", expect=200)
        limited_api.call("GET", "/users/me", ada, expect=200)
        limited_api.call("GET", "/users", ada, params={"search": "x"}, expect=200)


def test_no_rate_limit_when_it_is_zero(api: Api) -> None:
    statuses = {api.login("ada@example.com", expect=None).status_code for _ in range(10)}
    assert statuses == {401}


# --- What gets logged ---


def test_registration_is_logged_with_the_user_id_and_not_the_password(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with account_logs(caplog) as logs:
        user_id = api.register("Ada", "ada@example.com")["id"]
    assert f"User registered: user_id={user_id}" in logs.messages
    assert PASSWORD not in logs.text


def test_login_success_and_failure_are_logged_with_the_user_id_and_no_secret(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with account_logs(caplog) as logs:
        user_id = api.register("Ada", "ada@example.com")["id"]
        token = api.login("ada@example.com")["access_token"]
        api.login("ada@example.com", "a wrong password", expect=401)
        api.login("nobody@example.com", expect=401)
    assert f"Login succeeded: user_id={user_id}" in logs.messages
    assert f"Login failed: user_id={user_id}" in logs.messages
    assert "Login failed: unknown email" in logs.messages
    for secret in (PASSWORD, "a wrong password", token):
        assert secret not in logs.text


def test_a_rehash_is_logged_with_the_user_id(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(app=create_app(make_settings(database_url, argon2_time_cost=1))) as old_server:
        user_id = Api(old_server).register("Ada", "ada@example.com")["id"]
    new_app = create_app(make_settings(database_url, argon2_time_cost=2))
    with TestClient(app=new_app) as new_server, account_logs(caplog) as logs:
        Api(new_server).login("ada@example.com")
    assert f"Password hash upgraded: user_id={user_id}" in logs.messages
