"""A PostgreSQL that restarts, refuses connections or cuts sessions: every answer says "try again".

REST answers 503 with ``Retry-After``, a socket frame gets ``unavailable``, a handshake is closed with
1013; each is one WARNING line naming the error class and SQLSTATE, never a traceback. The cluster is
the test's own (``own_postgres``), so it can be stopped, held in recovery and promoted.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.exceptions import RepositoryError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from tests.api import Account, Api
from tests.conftest import LiveServer, fetch, start_server, stop_server, wait_for
from tests.pg_cluster import OwnPostgres
from tests.wsclient import is_ack, open_socket, receive_until, receive_until_closed, send_frame
from windi_chat.database import is_unavailable, unavailable_cause

RETRY_AFTER = "3"
WAITING_ON_A_LOCK = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"


class DriverError(Exception):
    """Stands in for a driver's error: only its SQLSTATE matters."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


def _wrapped(inner: BaseException) -> RepositoryError:
    """As the app meets it: the driver's error inside SQLAlchemy's, inside advanced-alchemy's."""
    statement_error = DBAPIError("SELECT 1", None, inner)  # type: ignore[arg-type]
    statement_error.__cause__ = inner
    repository_error = RepositoryError("wrapped")
    repository_error.__cause__ = statement_error
    return repository_error


@pytest.mark.parametrize("sqlstate", ["08000", "08003", "08006", "57P01", "57P02", "57P03", "53300"])
def test_connection_class_sqlstates_are_unavailability_even_when_wrapped(sqlstate: str) -> None:
    error = _wrapped(DriverError(sqlstate))
    assert is_unavailable(error)
    assert unavailable_cause(error) == f"DriverError ({sqlstate})"


@pytest.mark.parametrize("sqlstate", ["23505", "42P01", "57014", "22001"])
def test_statement_errors_are_not_unavailability(sqlstate: str) -> None:
    assert not is_unavailable(_wrapped(DriverError(sqlstate)))


def test_a_pool_timeout_is_unavailability() -> None:
    assert is_unavailable(PoolTimeoutError("QueuePool limit of size 10 overflow 10 reached"))


def _chat_to_lock(api: Api) -> tuple[Account, Account, int, str]:
    """Ada and Bob's chat, and the statement that locks its row (a read marker's move waits on it).

    Sends do not wait on it: the writer stores the other chats' sends and tries this one again.
    """
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    return ada, bob, chat_id, f"SELECT 1 FROM chats WHERE id = {chat_id} FOR UPDATE"  # noqa: S608 - an int


def _start(own_postgres: OwnPostgres, tmp_path: Path) -> LiveServer:
    own_postgres.start()
    return start_server(own_postgres.url, tmp_path / "server.log")


def _assert_warned_without_traceback(server: LiveServer, cause: str) -> None:
    log = server.log()
    assert "Traceback" not in log
    warnings = [line for line in log.splitlines() if cause in line]
    assert warnings
    assert all("WARNING" in line for line in warnings)
    assert not [line for line in log.splitlines() if "ERROR" in line]


def test_a_database_held_in_recovery_gives_503_1013_and_unavailable_then_recovers(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    server = _start(own_postgres, tmp_path)
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]
            with open_socket(server.ws_url, chat_id, ada.token) as socket:
                own_postgres.stop()
                own_postgres.start_refusing_connections()  # 57P03, as during start-up or a failover

                for _attempt in range(3):
                    response = api.send(ada, chat_id, "hello?", "rest-in-recovery", expect=None)
                    assert (response.status_code, response.headers["Retry-After"]) == (503, RETRY_AFTER)
                    assert "unavailable" in response.json()["detail"]
                health = http.get("/health")
                assert (health.status_code, health.headers["Retry-After"]) == (503, RETRY_AFTER)

                send_frame(socket, type="send", client_id="socket-in-recovery", text="hello?")
                [error] = receive_until(socket, lambda frame: frame["type"] == "error")
                assert (error["code"], error["client_id"]) == ("unavailable", "socket-in-recovery")

                with open_socket(server.ws_url, chat_id, bob.token) as refused:
                    assert receive_until_closed(refused) == ([], 1013)

                own_postgres.promote()
                wait_for(lambda: http.get("/health").status_code == 200, timeout=30)
                api.send(ada, chat_id, "hello?", "rest-in-recovery", expect=201)
                send_frame(socket, type="send", client_id="socket-in-recovery", text="hello?")
                receive_until(socket, is_ack("socket-in-recovery"))
            assert [m["client_id"] for m in api.history(bob, chat_id)] == [
                "rest-in-recovery",
                "socket-in-recovery",
            ]
    finally:
        stop_server(server)
    _assert_warned_without_traceback(server, "CannotConnectNowError (57P03)")


def test_a_session_terminated_mid_query_gives_503_and_unavailable(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    server = _start(own_postgres, tmp_path)
    try:
        with server.http() as http, ThreadPoolExecutor(max_workers=1) as pool:
            api = Api(http)
            ada, bob, chat_id, locked_chat = _chat_to_lock(api)

            api.send(bob, chat_id, "one", "one")
            api.send(bob, chat_id, "two", "two")
            with own_postgres.row_locked(locked_chat), server.http() as reader:
                # The read waits on the chat's row lock; an administrator ends its session: 57P01.
                reading = pool.submit(Api(reader).read, ada, chat_id, 1, expect=None)
                assert own_postgres.terminate_lock_waiters() == 1
                response: Any = reading.result()
            assert (response.status_code, response.headers["Retry-After"]) == (503, RETRY_AFTER)

            with open_socket(server.ws_url, chat_id, ada.token) as socket:
                with own_postgres.row_locked(locked_chat):
                    send_frame(socket, type="read", seq=2)
                    assert own_postgres.terminate_lock_waiters() == 1
                    [error] = receive_until(socket, lambda frame: frame["type"] == "error")
                assert error["code"] == "unavailable"

                # Nothing was changed by the cut sessions, and the same frames now go through.
                assert api.chat(ada, chat_id)["unread_count"] == 2
                api.read(ada, chat_id, 1)
                send_frame(socket, type="read", seq=2)
                receive_until(socket, lambda frame: frame["type"] == "read" and frame["seq"] == 2)
            assert api.chat(ada, chat_id)["unread_count"] == 0
    finally:
        stop_server(server)
    _assert_warned_without_traceback(server, "AdminShutdownError (57P01)")


def test_rest_sends_across_an_immediate_restart_get_201_or_503_and_every_201_is_kept(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    server = _start(own_postgres, tmp_path)
    answers: list[tuple[str, int, str | None]] = []
    restarted = threading.Event()
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]

            def keep_sending() -> None:
                with server.http() as sender:
                    sends = Api(sender)
                    for n in itertools.count():
                        response = sends.send(ada, chat_id, "hi", f"restart-{n}", expect=None)
                        answers.append(
                            (f"restart-{n}", response.status_code, response.headers.get("Retry-After"))
                        )
                        after_restart = (
                            [status for _, status, _ in answers[-5:]] if restarted.is_set() else []
                        )
                        if after_restart == [201] * 5:
                            return

            with ThreadPoolExecutor(max_workers=1) as pool:
                sending = pool.submit(keep_sending)
                wait_for(lambda: len(answers) >= 5)
                own_postgres.restart_immediately()
                restarted.set()
                sending.result(timeout=60)
            query = "SELECT client_id FROM messages WHERE chat_id = :chat_id"
            stored = {row[0] for row in fetch(own_postgres.url, query, chat_id=chat_id)}
    finally:
        stop_server(server)
    assert {status for _, status, _ in answers} <= {201, 503}
    assert all(retry_after == RETRY_AFTER for _, status, retry_after in answers if status == 503)
    assert {client_id for client_id, status, _ in answers if status == 201} <= stored
    log = server.log()
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if "ERROR" in line]


def test_a_request_that_finds_no_free_connection_within_the_pool_timeout_gets_503(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    own_postgres.start()
    limits = {"WINDI_DB_POOL_SIZE": "1", "WINDI_DB_MAX_OVERFLOW": "0", "WINDI_DB_POOL_TIMEOUT": "1"}
    server = start_server(own_postgres.url, tmp_path / "server.log", limits)
    try:
        with server.http() as http, ThreadPoolExecutor(max_workers=1) as pool:
            api = Api(http)
            ada, _bob, chat_id, locked_chat = _chat_to_lock(api)

            with server.http() as sender:
                with own_postgres.row_locked(locked_chat):
                    # The read holds the only connection while it waits on the lock.
                    reading = pool.submit(Api(sender).read, ada, chat_id, 0, expect=None)
                    wait_for(lambda: fetch(own_postgres.url, WAITING_ON_A_LOCK))
                    response = http.get("/users/me", headers=ada.headers)
                    assert (response.status_code, response.headers["Retry-After"]) == (503, RETRY_AFTER)
                assert reading.result().status_code == 200
            assert http.get("/users/me", headers=ada.headers).status_code == 200
    finally:
        stop_server(server)
    _assert_warned_without_traceback(server, "Database unavailable (GET /users/me): TimeoutError")
