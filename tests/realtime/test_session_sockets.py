"""Sockets end with their access: a revoked session, an expired token, a bad renewal all close with 4401."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.api import Account, Api
from tests.conftest import TEST_SECRET, LiveServer, start_server, stop_server, wait_for
from tests.wsclient import (
    is_type,
    open_socket,
    receive_until,
    receive_until_closed,
    send_and_confirm,
    send_frame,
)

CLOSE_UNAUTHORIZED = 4401
SHORT_TTL_SECONDS = 4


def expiry_of(token: str) -> float:
    return float(jwt.decode(token, TEST_SECRET, algorithms=["HS256"], options={"verify_exp": False})["exp"])


def closed_with(socket: ClientConnection, timeout: float = 5) -> tuple[int, str]:
    """The close code and reason the server ended the socket with (frames before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.recv(timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError:
            pytest.fail("socket still open at the deadline")
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")


# Revocation -----------------------------------------------------------------------------------------


def test_logout_closes_the_sessions_sockets_with_4401_and_leaves_other_sessions_open(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    laptop = rest.session_of(ada)
    chat_id = rest.private_chat(ada, bob)["id"]
    phone_socket = connect(chat_id, ada.token)
    laptop_socket = connect(chat_id, laptop.token)
    send_and_confirm(phone_socket, "before")

    rest.logout(ada)

    assert closed_with(phone_socket)[0] == CLOSE_UNAUTHORIZED
    send_and_confirm(laptop_socket, "after")


@pytest.mark.parametrize("how", ["revoke-one", "revoke-others", "change-password"])
def test_every_way_of_ending_a_session_closes_its_sockets(rest: Api, connect: Any, how: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    other = rest.session_of(ada)
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, other.token)
    kept = connect(chat_id, ada.token)
    send_and_confirm(socket, "before")

    if how == "revoke-one":
        rest.revoke_session(ada, str(jwt.decode(other.token, options={"verify_signature": False})["sid"]))
    elif how == "revoke-others":
        rest.revoke_other_sessions(ada)
    else:
        rest.change_password(ada, "correct horse battery", "a brand new passphrase")

    assert closed_with(socket)[0] == CLOSE_UNAUTHORIZED
    send_and_confirm(kept, "still here")


def test_a_revoked_sessions_token_cannot_open_a_socket(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.logout(ada)
    assert receive_until_closed(connect(chat_id, ada.token)) == ([], CLOSE_UNAUTHORIZED)


def test_a_reused_refresh_token_closes_the_sockets_of_its_session(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    rest.refresh(ada.refresh_token)
    rest.refresh(ada.refresh_token, expect=401)  # a copy: the session ends
    assert closed_with(socket)[0] == CLOSE_UNAUTHORIZED


# Renewing in-band -----------------------------------------------------------------------------------


def test_an_auth_frame_with_a_newer_token_of_the_same_person_is_answered_auth_ok(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    newer = rest.refresh(ada.refresh_token)["access_token"]

    send_frame(socket, type="auth", token=newer)
    answer = receive_until(socket, is_type("auth_ok"))[-1]

    assert datetime.fromisoformat(answer["expires_at"]).timestamp() == expiry_of(newer)
    assert set(answer) == {"type", "expires_at"}
    send_and_confirm(socket, "after-renewal")


def test_an_auth_frame_with_another_login_of_the_same_person_moves_the_socket_to_that_session(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    laptop = rest.session_of(ada)
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    send_frame(socket, type="auth", token=laptop.token)
    receive_until(socket, is_type("auth_ok"))
    rest.logout(ada)  # the session the socket was opened with: no longer its session
    send_and_confirm(socket, "still-open")
    rest.logout(laptop)
    assert closed_with(socket)[0] == CLOSE_UNAUTHORIZED


@pytest.mark.parametrize("whose", ["another-person", "invalid", "revoked-session"])
def test_an_auth_frame_with_a_token_that_does_not_prove_the_same_live_person_closes_4401(
    rest: Api, connect: Any, whose: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    spent = rest.session_of(ada)
    rest.logout(spent)
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    token = {"another-person": bob.token, "invalid": ada.token[:-3] + "abc", "revoked-session": spent.token}

    send_frame(socket, type="auth", token=token[whose])

    assert closed_with(socket)[0] == CLOSE_UNAUTHORIZED


@pytest.mark.parametrize(
    "frame", [{"type": "auth"}, {"type": "auth", "token": ""}, {"type": "auth", "token": 7}]
)
def test_a_malformed_auth_frame_is_an_error_frame_and_the_socket_stays(
    rest: Api, connect: Any, frame: dict[str, Any]
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    socket.send(json.dumps(frame))
    error = receive_until(socket, is_type("error"))[-1]
    assert error["code"] == "invalid_frame"
    send_and_confirm(socket, "still-open")


# Expiry -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def short_lived_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server whose access tokens live a few seconds (on the package's database, which no test empties)."""
    url: str = request.getfixturevalue(f"shared_{request.param}_url")
    server = start_server(
        url,
        tmp_path_factory.mktemp("short") / "server.log",
        {"WINDI_TOKEN_TTL_SECONDS": str(SHORT_TTL_SECONDS)},
    )
    yield server
    stop_server(server)


@pytest.fixture
def short_rest(short_lived_server: LiveServer) -> Iterator[Api]:
    with short_lived_server.http() as http:
        yield Api(http)


def _people_in_a_chat(api: Api) -> tuple[Account, Account, int]:
    ada, bob = api.people("Ada", "Bob")
    return ada, bob, api.private_chat(ada, bob)["id"]


def test_a_socket_is_closed_with_4401_token_expired_when_its_token_expires(
    short_lived_server: LiveServer, short_rest: Api
) -> None:
    ada, _bob, chat_id = _people_in_a_chat(short_rest)
    with open_socket(short_lived_server.ws_url, chat_id, ada.token) as socket:
        code, reason = closed_with(socket, timeout=SHORT_TTL_SECONDS + 5)
    assert (code, reason) == (CLOSE_UNAUTHORIZED, "token expired")
    assert time.time() >= expiry_of(ada.token)


def test_a_socket_renewed_in_band_outlives_its_first_token_and_then_expires_with_the_new_one(
    short_lived_server: LiveServer, short_rest: Api
) -> None:
    ada, _bob, chat_id = _people_in_a_chat(short_rest)
    first_expiry = expiry_of(ada.token)
    with open_socket(short_lived_server.ws_url, chat_id, ada.token) as socket:
        # Renewed shortly before the first token expires, as a client would, with a token that outlives it.
        wait_for(lambda: time.time() > first_expiry - 1.5, timeout=SHORT_TTL_SECONDS + 5)
        newer = short_rest.refresh(ada.refresh_token)["access_token"]
        send_frame(socket, type="auth", token=newer)
        receive_until(socket, is_type("auth_ok"))
        assert expiry_of(newer) >= first_expiry + 2
        wait_for(lambda: time.time() > first_expiry + 1.2, timeout=SHORT_TTL_SECONDS + 5)
        send_and_confirm(socket, "past-the-first-expiry")
        code, reason = closed_with(socket, timeout=SHORT_TTL_SECONDS + 5)
    assert (code, reason) == (CLOSE_UNAUTHORIZED, "token expired")
    assert time.time() >= expiry_of(newer)


def test_no_socket_of_a_session_survives_its_logout_whatever_the_handshake_timing(
    rest: Api, shared_server: LiveServer
) -> None:
    """Handshakes race the logout from several threads; every socket they opened ends with 4401."""
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    opened: list[ClientConnection] = []
    lock = threading.Lock()
    stop = threading.Event()
    closing = ExitStack()

    def reconnect_in_a_loop() -> None:
        while not stop.is_set():
            connecting = open_socket(shared_server.ws_url, chat_id, ada.token)
            with lock:
                opened.append(closing.enter_context(connecting))

    threads = [threading.Thread(target=reconnect_in_a_loop) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(opened) >= 20)
        rest.logout(ada)
        at_logout = len(opened)
        wait_for(lambda: len(opened) >= at_logout + 20)  # handshakes that began around the logout
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    with closing:
        codes = {receive_until_closed(socket)[1] for socket in opened}
    assert codes == {CLOSE_UNAUTHORIZED}
