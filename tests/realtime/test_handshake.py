"""Opening a socket: the token (query string or header), membership, ``after_seq``, what gets logged."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.api import Account, Api
from tests.conftest import TEST_SECRET, LiveServer, wait_for
from tests.wsclient import open_socket, receive_until_closed, send_and_confirm

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


def _sid(account: Account) -> str:
    return str(jwt.decode(account.token, options={"verify_signature": False})["sid"])


def _expired(account: Account) -> str:
    now = int(time.time())
    claims = {"sub": str(account.id), "sid": _sid(account), "iat": now - 7200, "exp": now - 3600}
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def _tampered(account: Account) -> str:
    header, payload, signature = account.token.split(".")
    return f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"


BAD_TOKENS: dict[str, Callable[[Account], str | None]] = {
    "missing": lambda _account: None,
    "garbage": lambda _account: "not-a-token",
    "expired": _expired,
    "tampered": _tampered,
    "other-secret": lambda account: jwt.encode(
        {
            "sub": str(account.id),
            "sid": _sid(account),
            "iat": int(time.time()),
            "exp": int(time.time()) + 3600,
        },
        "another-secret-that-is-long-enough-for-hs256-000000",
        algorithm="HS256",
    ),
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_socket_without_a_valid_token_is_closed_with_4401(rest: Api, connect: Any, kind: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    socket = connect(chat_id, BAD_TOKENS[kind](ada))

    assert receive_until_closed(socket) == ([], CLOSE_UNAUTHORIZED)


def test_token_is_also_accepted_as_a_bearer_header(rest: Api, shared_server: LiveServer) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    with open_socket(shared_server.ws_url, chat_id, headers=ada.headers) as socket:
        assert send_and_confirm(socket, "via-header")["sender_id"] == ada.id


@pytest.mark.parametrize("whose", ["unknown-chat", "not-a-member"])
def test_socket_to_a_chat_the_user_is_not_in_is_closed_with_4403(rest: Api, connect: Any, whose: str) -> None:
    ada, bob, eve = rest.people("Ada", "Bob", "Eve")
    chat_id = rest.private_chat(ada, bob)["id"]

    socket = connect(chat_id + 1_000_000 if whose == "unknown-chat" else chat_id, eve.token)

    assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


@pytest.mark.parametrize("after_seq", ["abc", "-1", "1.5", ""])
def test_bad_after_seq_is_closed_with_4400(rest: Api, connect: Any, after_seq: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    socket = connect(chat_id, ada.token, after_seq=after_seq)

    assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST)


def test_after_seq_with_a_non_ascii_digit_is_closed_with_4400(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    socket = connect(chat_id, ada.token, after_seq="\u00b2")

    assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST)


def test_token_in_the_query_string_never_reaches_the_log(
    rest: Api, shared_server: LiveServer, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]

    send_and_confirm(connect(chat_id, ada.token), "logged")
    with open_socket(shared_server.ws_url, chat_id, headers=bob.headers) as socket:
        send_and_confirm(socket, "logged-too")

    wait_for(lambda: f"/ws/{chat_id}?token=[redacted]" in shared_server.log())
    log = shared_server.log()
    assert ada.token not in log
    assert bob.token not in log
    assert ada.token.split(".")[2] not in log  # not even the signature


def test_sockets_are_not_compressed_even_when_the_client_offers_it(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)  # the client offers permessage-deflate by default

    assert socket.request is not None
    assert "permessage-deflate" in socket.request.headers.get("Sec-WebSocket-Extensions", "")
    assert socket.response is not None
    assert "Sec-WebSocket-Extensions" not in socket.response.headers


def test_message_text_never_reaches_the_log_even_at_debug(
    rest: Api, shared_server: LiveServer, connect: Any
) -> None:
    """The shared server logs at DEBUG, where the WebSocket library logs every frame it reads or sends."""
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    text = f"a private matter {ada.id}-{bob.id}"

    with open_socket(shared_server.ws_url, chat_id, ada.token) as socket:
        send_and_confirm(socket, "private", text=text)

    wait_for(lambda: f"Socket closed: chat_id={chat_id}" in shared_server.log())
    log = shared_server.log()
    assert "< TEXT [" in log
    assert text not in log
    assert "a private matter" not in log  # not even the start of it
