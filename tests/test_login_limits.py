"""Logins under attack: the per-account lock, which addresses are believed, a pool argon2 cannot starve,
and limiter memory that does not grow with every address or email tried."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest

from tests.api import PASSWORD, Api
from tests.conftest import LiveServer, start_server, stop_server, wait_for
from windi_chat.stores import ExpiringMemoryStore

LOCKED = 429
_addresses = (f"203.0.113.{n}" for n in itertools.cycle(range(1, 255)))


@pytest.fixture(scope="module")
def lock_after_3(shared_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that locks an account after 3 failed logins in a minute, and believes 127.0.0.1's
    X-Forwarded-For, so each attempt can come from another address. Shared by the module's tests, which
    each use accounts of their own: the lock does not depend on the database."""
    server = start_server(
        shared_postgres_url,
        tmp_path_factory.mktemp("lock") / "server.log",
        {
            "WINDI_LOGIN_MAX_FAILURES": "3",
            "WINDI_LOGIN_FAILURE_WINDOW_SECONDS": "60",
            "WINDI_FORWARDED_ALLOW_IPS": "127.0.0.1",
        },
    )
    yield server
    stop_server(server)


def login_from_another_address(api: Api, email: str, password: str) -> int:
    response = api.http.post(
        "/login",
        data={"username": email, "password": password},
        headers={"X-Forwarded-For": next(_addresses)},
    )
    return response.status_code


def test_an_account_is_locked_after_its_failures_from_any_address(lock_after_3: LiveServer) -> None:
    with lock_after_3.http() as http:
        api = Api(http)
        ada, bob = api.people("Ada", "Bob")
        statuses = [login_from_another_address(api, ada.email, "wrong password") for _ in range(3)]
        assert statuses == [401, 401, 401]
        response = api.login(ada.email, PASSWORD, expect=None)  # the right password, but locked
        assert response.status_code == LOCKED
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert "Too many failed logins" in response.json()["detail"]
        api.login(bob.email, PASSWORD, expect=200)  # other accounts are not concerned
        api.me(ada, expect=200)  # nor are the sessions the account already has


def test_an_unknown_email_is_locked_the_same_way(lock_after_3: LiveServer) -> None:
    with lock_after_3.http() as http:
        api = Api(http)
        [ada] = api.people("Ada")
        for email in (ada.email, "nobody-here@example.com"):
            statuses = [login_from_another_address(api, email, "wrong password") for _ in range(4)]
            assert statuses == [401, 401, 401, LOCKED]


def test_the_lock_is_per_normalised_email(lock_after_3: LiveServer) -> None:
    with lock_after_3.http() as http:
        api = Api(http)
        [ada] = api.people("Ada")
        spellings = [ada.email.upper(), ada.email, f"  {ada.email.title()} "]
        statuses = [login_from_another_address(api, email, "wrong password") for email in spellings]
        assert statuses == [401, 401, 401]
        assert api.login(ada.email, expect=None).status_code == LOCKED


def test_a_successful_login_clears_the_failures(lock_after_3: LiveServer) -> None:
    with lock_after_3.http() as http:
        api = Api(http)
        [ada] = api.people("Ada")
        for _ in range(2):
            api.login(ada.email, "wrong password", expect=401)
        api.login(ada.email, expect=200)
        for _ in range(3):
            api.login(ada.email, "wrong password", expect=401)
        api.login(ada.email, expect=LOCKED)


def test_concurrent_failures_check_no_more_passwords_than_the_limit(lock_after_3: LiveServer) -> None:
    with lock_after_3.http() as http:
        api = Api(http)
        [ada] = api.people("Ada")
        barrier = threading.Barrier(12)

        def attempt(_n: int) -> int:
            barrier.wait(timeout=10)
            return login_from_another_address(api, ada.email, "wrong password")

        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = sorted(pool.map(attempt, range(12)))
    assert statuses == [401] * 3 + [LOCKED] * 9


def test_wrong_passwords_of_a_signed_in_person_share_the_lock(lock_after_3: LiveServer) -> None:
    with lock_after_3.http() as http:
        api = Api(http)
        ada, bob = api.people("Ada", "Bob")
        barrier = threading.Barrier(8)

        def change(_n: int) -> int:
            barrier.wait(timeout=10)
            response = api.change_password(ada, "wrong password", "another password", expect=None)
            return int(response.status_code)

        # However many arrive at once, no more than the limit are checked against the hash.
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = sorted(pool.map(change, range(8)))
        assert statuses == [403] * 3 + [LOCKED] * 5
        # The right password is refused too while the lock holds, for a change, a deletion or a login.
        assert api.change_password(ada, PASSWORD, "another password", expect=None).status_code == LOCKED
        deletion = api.call("DELETE", "/users/me", ada, json={"password": PASSWORD}, expect=None)
        assert deletion.status_code == LOCKED
        assert int(deletion.headers["Retry-After"]) >= 1
        assert api.login(ada.email, expect=None).status_code == LOCKED
        api.change_password(bob, PASSWORD, "another password", expect=204)  # others are not concerned


def test_the_lock_ends_with_its_window(postgres_url: str, tmp_path: Path) -> None:
    server = start_server(
        postgres_url,
        tmp_path / "server.log",
        {"WINDI_LOGIN_MAX_FAILURES": "1", "WINDI_LOGIN_FAILURE_WINDOW_SECONDS": "1"},
    )
    try:
        with server.http() as http:
            api = Api(http)
            [ada] = api.people("Ada")
            api.login(ada.email, "wrong password", expect=401)
            assert api.login(ada.email, expect=None).status_code == LOCKED
            wait_for(lambda: api.login(ada.email, expect=None).status_code == 200, timeout=20)
    finally:
        stop_server(server)


def test_no_lock_when_the_limit_is_zero(postgres_url: str, tmp_path: Path) -> None:
    server = start_server(postgres_url, tmp_path / "server.log", {"WINDI_LOGIN_MAX_FAILURES": "0"})
    try:
        with server.http() as http:
            api = Api(http)
            [ada] = api.people("Ada")
            assert {api.login(ada.email, "wrong", expect=None).status_code for _ in range(12)} == {401}
            api.login(ada.email, expect=200)
    finally:
        stop_server(server)


# --- Which address a request comes from ---


def rotating_forwarded_logins(server: LiveServer, count: int) -> list[int]:
    with server.http() as http:
        api = Api(http)
        return [login_from_another_address(api, f"rotate{n}@example.com", "wrong") for n in range(count)]


def test_x_forwarded_for_from_localhost_is_ignored_by_default(postgres_url: str, tmp_path: Path) -> None:
    server = start_server(postgres_url, tmp_path / "server.log", {"WINDI_AUTH_RATE_LIMIT": "3"})
    try:
        statuses = rotating_forwarded_logins(server, 4)
    finally:
        stop_server(server)
    assert statuses == [401, 401, 401, LOCKED]


def test_x_forwarded_for_is_believed_from_a_listed_proxy(postgres_url: str, tmp_path: Path) -> None:
    server = start_server(
        postgres_url,
        tmp_path / "server.log",
        {"WINDI_AUTH_RATE_LIMIT": "3", "WINDI_FORWARDED_ALLOW_IPS": "127.0.0.1"},
    )
    try:
        statuses = rotating_forwarded_logins(server, 6)
    finally:
        stop_server(server)
    assert statuses == [401] * 6


# --- The pool while argon2 runs ---


def test_slow_logins_leave_the_pool_to_other_requests(pg_database_url: str, tmp_path: Path) -> None:
    """One pooled connection, a second's wait for it at most, and logins whose hashing takes a good
    part of a second each, queued one after another: requests made while they are in flight get through.

    Before, each login held its connection while it queued for argon2 and hashed, and the inbox
    requests behind it waited out the pool timeout and answered 503.
    """
    server = start_server(
        pg_database_url,
        tmp_path / "server.log",
        {
            "WINDI_DB_POOL_SIZE": "1",
            "WINDI_DB_MAX_OVERFLOW": "0",
            "WINDI_DB_POOL_TIMEOUT": "1",
            "WINDI_ARGON2_TIME_COST": "8",
            "WINDI_ARGON2_MEMORY_KIB": "65536",
        },
    )
    try:
        with (
            server.http() as http,
            httpx.Client(base_url=server.base_url, timeout=120) as patient,
            ThreadPoolExecutor(max_workers=4) as pool,
        ):
            api = Api(http)
            [ada] = api.people("Ada")
            logins = [
                pool.submit(login_from_another_address, Api(patient), f"slow{n}@example.com", "wrong")
                for n in range(4)
            ]
            inbox_statuses = []
            while not all(login.done() for login in logins):
                inbox_statuses.append(api.chats(ada, expect=None).status_code)
            login_statuses = [login.result() for login in logins]
    finally:
        stop_server(server)
    assert inbox_statuses
    assert set(inbox_statuses) == {200}
    assert login_statuses == [401] * 4


# --- The limiter's memory ---


def test_the_per_process_store_forgets_expired_entries() -> None:
    async def scenario() -> tuple[int, int, tuple[int, int]]:
        store = ExpiringMemoryStore(sweep_seconds=0)
        for n in range(100):
            await store.set(f"address-{n}", b"1", expires_in=1)
            await store.increment(f"email-{n}", window_seconds=1)
        filled = len(store)
        with anyio.fail_after(20):
            while len(store) > 1:
                await store.set("the-latest", b"1", expires_in=60)
                await anyio.sleep(0.1)
        return filled, len(store), await store.increment("the-latest-count", window_seconds=60)

    filled, left, counted = anyio.run(scenario)
    assert filled == 200
    assert left == 1
    assert counted[0] == 1
    assert 1 <= counted[1] <= 60


def test_a_count_keeps_its_window_and_starts_again_after_it() -> None:
    async def scenario() -> list[int]:
        store = ExpiringMemoryStore()
        counts = [(await store.increment("ada", window_seconds=1))[0] for _ in range(3)]
        with anyio.fail_after(20):
            while True:  # until the window has passed and the count starts again
                if (await store.increment("ada", window_seconds=1))[0] == 1:
                    return counts
                await anyio.sleep(0.1)

    assert anyio.run(scenario) == [1, 2, 3]
