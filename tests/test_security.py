"""Tokens and passwords: HS256 only, every protected route closed without a token, no token in a log."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import sys
import threading
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient
from websockets.frames import Close, Frame, Opcode
from websockets.sync.client import connect

from tests.api import Account, Api
from tests.conftest import TEST_SECRET, LiveServer, run, start_server, stop_server, wait_for
from tests.wsclient import send_and_confirm
from windi_chat.logs import RedactSecrets
from windi_chat.security import PasswordHasher, TokenCodec

PUBLIC_PATHS = ("/register", "/login", "/token/refresh", "/health", "/health/ready")
# The web client's files (windi_chat/web.py): public, they hold no data.
WEB_CLIENT_PATHS = ("/", "/{file_path:path}")
WRONG_SECRET = "another-secret-that-is-long-enough-for-hs256-9876543210"


def session_id(account: Account) -> str:
    """The session an account's access token belongs to (its ``sid``)."""
    return str(jwt.decode(account.token, options={"verify_signature": False})["sid"])


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(user_id: int, sid: str | None = "session-1", **changes: Any) -> dict[str, Any]:
    """Valid claims for ``user_id`` on session ``sid``; a change to ``None`` removes that claim."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {"sub": str(user_id), "sid": sid, "iat": now, "exp": now + timedelta(minutes=5)}
    values.update(changes)
    return {key: value for key, value in values.items() if value is not None}


def hs256(payload: dict[str, Any], secret: str = TEST_SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def hs512(payload: dict[str, Any]) -> str:
    with warnings.catch_warnings():  # pyjwt warns that the test secret is short for HS512
        warnings.simplefilter("ignore")
        return jwt.encode(payload, TEST_SECRET, algorithm="HS512")


def unsigned(payload: dict[str, Any]) -> str:
    """``alg: none``, built by hand because pyjwt refuses to make one."""
    payload = {
        key: int(value.timestamp()) if isinstance(value, datetime) else value
        for key, value in payload.items()
    }
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(payload)}."


def tampered(user_id: int, sid: str) -> str:
    """A valid token whose payload now claims someone else, with the original signature."""
    header, _, signature = hs256(claims(user_id, sid)).split(".")
    now = int(datetime.now(UTC).timestamp())
    payload = {"sub": str(user_id + 1), "sid": sid, "iat": now, "exp": now + 300}
    return f"{header}.{b64url(payload)}.{signature}"


BAD_TOKENS = {
    "expired": lambda uid, sid: hs256(
        claims(
            uid, sid, iat=datetime.now(UTC) - timedelta(hours=2), exp=datetime.now(UTC) - timedelta(hours=1)
        )
    ),
    "tampered-payload": tampered,
    "wrong-secret": lambda uid, sid: hs256(claims(uid, sid), WRONG_SECRET),
    "alg-none": lambda uid, sid: unsigned(claims(uid, sid)),
    "hs512-right-secret": lambda uid, sid: hs512(claims(uid, sid)),
    "missing-exp": lambda uid, sid: hs256(claims(uid, sid, exp=None)),
    "missing-iat": lambda uid, sid: hs256(claims(uid, sid, iat=None)),
    "missing-sub": lambda uid, sid: hs256(claims(uid, sid, sub=None)),
    # As every token issued before sessions existed.
    "missing-sid": lambda uid, _sid: hs256(claims(uid, sid=None)),
    "not-a-jwt": lambda _uid, _sid: "not-a-token",
}


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec.create(secret=TEST_SECRET, ttl=timedelta(minutes=5))


# --- TokenCodec ---


def test_an_issued_token_proves_its_user_id(codec: TokenCodec) -> None:
    assert codec.user_id(codec.issue(42, "session-1")) == 42


def test_an_issued_token_is_hs256_with_sub_iat_and_exp(codec: TokenCodec) -> None:
    token = codec.issue(42, "session-1")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    payload = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert payload["sub"] == "42"
    assert payload["exp"] - payload["iat"] == 300
    assert payload["sid"] == "session-1"
    assert payload["jti"]


def test_a_token_from_another_secret_proves_nothing(codec: TokenCodec) -> None:
    other = TokenCodec.create(secret=WRONG_SECRET, ttl=timedelta(minutes=5))
    assert codec.user_id(other.issue(42, "session-1")) is None


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_token_proves_nothing(codec: TokenCodec, kind: str) -> None:
    assert codec.user_id(BAD_TOKENS[kind](42, "session-1")) is None


def test_a_token_whose_subject_is_not_a_number_proves_nothing(codec: TokenCodec) -> None:
    assert codec.user_id(hs256(claims(1, sub="ada"))) is None


def test_an_empty_string_proves_nothing(codec: TokenCodec) -> None:
    assert codec.user_id("") is None


# --- PasswordHasher ---


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=1024)


def test_a_password_verifies_against_its_hash(hasher: PasswordHasher) -> None:
    password_hash = run(hasher.hash("correct horse battery"))
    assert password_hash.startswith("$argon2id$")
    assert "correct horse battery" not in password_hash
    assert run(hasher.verify("correct horse battery", password_hash)) == (True, None)


def test_a_wrong_password_does_not_verify(hasher: PasswordHasher) -> None:
    password_hash = run(hasher.hash("correct horse battery"))
    assert run(hasher.verify("wrong horse battery", password_hash)) == (False, None)


def test_verifying_without_a_hash_fails(hasher: PasswordHasher) -> None:
    assert run(hasher.verify("correct horse battery", None)) == (False, None)


def test_a_hash_with_outdated_parameters_gets_a_replacement(hasher: PasswordHasher) -> None:
    old_hash = run(hasher.hash("correct horse battery"))
    valid, new_hash = run(
        PasswordHasher(time_cost=2, memory_kib=1024).verify("correct horse battery", old_hash)
    )
    assert valid
    assert new_hash is not None
    assert "t=2," in new_hash


def test_hashes_run_at_the_lowest_cpu_priority_and_the_event_loop_does_not(hasher: PasswordHasher) -> None:
    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def both() -> tuple[int, int]:
        return await hasher._run(priority), priority()

    before = priority()
    in_hashing_thread, in_event_loop = run(both())
    assert in_hashing_thread == 19
    assert in_event_loop == before < 19


# --- Tokens over HTTP ---


def test_users_me_without_a_token_is_401(client: TestClient[Any]) -> None:
    assert client.get("/users/me").status_code == 401


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_users_me_with_a_bad_token_is_401(client: TestClient[Any], make_account: Any, kind: str) -> None:
    ada: Account = make_account("Ada")
    token = BAD_TOKENS[kind](ada.id, session_id(ada))
    response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_a_token_crafted_with_the_right_secret_and_claims_is_accepted(
    client: TestClient[Any], make_account: Any
) -> None:
    """The control for the bad tokens above: the same construction, unspoilt, works."""
    ada: Account = make_account("Ada")
    token = hs256(claims(ada.id, session_id(ada)))
    response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["id"] == ada.id


def test_a_token_issued_by_the_codec_is_accepted_over_http(
    client: TestClient[Any], make_account: Any, codec: TokenCodec
) -> None:
    ada: Account = make_account("Ada")
    token = codec.issue(ada.id, session_id(ada))
    response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.json()["id"] == ada.id


def concrete_path(route_path: str) -> str:
    """``/chats/{chat_id:int}`` -> ``/chats/1``: a path the route matches."""
    return re.sub(r"\{[^}:]+:(int|str|[^}]+)\}", lambda m: "1" if m.group(1) == "int" else "x", route_path)


def test_every_non_public_http_route_requires_a_token(client: TestClient[Any]) -> None:
    app = client.app
    checked, open_routes = [], []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue  # WebSocket routes check their token themselves
        if route.path in PUBLIC_PATHS + WEB_CLIENT_PATHS or route.path.startswith("/docs"):
            continue
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            path = concrete_path(route.path)
            response = client.request(method, path)
            checked.append(f"{method} {path}")
            if response.status_code != 401:
                open_routes.append(f"{method} {path} -> {response.status_code}")
    assert {"GET /users/me", "GET /users"} <= set(checked)
    assert open_routes == []


@pytest.mark.parametrize("path", ["/health", "/health/ready", "/docs", "/docs/openapi.json"])
def test_health_and_docs_need_no_token(client: TestClient[Any], path: str) -> None:
    assert client.get(path).status_code == 200


def test_register_and_login_need_no_token(api: Api) -> None:
    account = api.account("Ada")
    assert account.token


def test_a_token_in_the_query_string_does_not_authenticate_rest_calls(
    client: TestClient[Any], make_account: Any
) -> None:
    ada: Account = make_account("Ada")
    assert client.get("/users/me", params={"token": ada.token}).status_code == 401


# --- Redaction of tokens in logs ---

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def redacted(record: logging.LogRecord) -> logging.LogRecord:
    assert RedactSecrets().filter(record) is True  # redacts, never drops
    return record


def test_redaction_masks_a_token_in_a_uvicorn_access_record_and_keeps_its_args_a_tuple() -> None:
    record = redacted(
        logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", f"/ws/1?token={JWT}&after=3", "1.1", 101),
            None,
        )
    )
    assert isinstance(record.args, tuple)
    assert len(record.args) == 5
    message = record.getMessage()
    assert JWT not in message
    assert "/ws/1?token=[redacted]&after=3" in message
    assert message.endswith('" 101')


def test_redaction_masks_a_bearer_header() -> None:
    record = redacted(
        logging.LogRecord("x", logging.INFO, __file__, 1, "Authorization: Bearer abc.DEF-123_x", None, None)
    )
    assert record.getMessage() == "Authorization: Bearer [redacted]"


def test_redaction_masks_a_token_in_dict_args() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "path=%(path)s", None, None)
    record.args = {"path": f"/users/me?access_token={JWT}"}
    assert redacted(record).getMessage() == "path=/users/me?access_token=[redacted]"


def test_redaction_masks_a_bare_jwt_anywhere() -> None:
    record = redacted(logging.LogRecord("x", logging.INFO, __file__, 1, "got %s from client", (JWT,), None))
    assert record.getMessage() == "got [redacted] from client"


def test_redaction_leaves_ordinary_messages_alone() -> None:
    record = redacted(
        logging.LogRecord("x", logging.INFO, __file__, 1, "User registered: user_id=%s", (7,), None)
    )
    assert record.getMessage() == "User registered: user_id=7"


def test_redaction_masks_a_token_in_a_traceback_printed_as_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    try:
        raise ValueError(f"could not open /ws/1?token={JWT}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    handler.handle(record)
    output = stream.getvalue()
    assert "ValueError: could not open /ws/1?token=[redacted]" in output
    assert JWT not in output


def test_redaction_masks_a_token_in_stack_info() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "here", None, None, sinfo=f'  url = "?token={JWT}"'
    )
    assert JWT not in (redacted(record).stack_info or "")


def test_the_server_log_never_contains_a_token(live_server: LiveServer) -> None:
    with live_server.http() as http:
        account = Api(http).account("Ada")
        http.get("/users/me", params={"token": account.token})
        http.get("/users/me", headers={"Authorization": f"Bearer {account.token}"})
    with (
        contextlib.suppress(Exception),
        connect(f"{live_server.ws_url}/ws/1?token={account.token}", open_timeout=5),
    ):
        pass  # the endpoint may refuse the token or not exist yet: only the log matters here
    wait_for(lambda: "/ws/1" in live_server.log())
    log = live_server.log()
    assert "Login succeeded" in log
    assert account.token not in log
    assert account.token.split(".")[2] not in log  # not even the signature


# Every way of writing the ``token`` key that the server, or a proxy, may read as ``token``.
ENCODED_TOKEN_KEYS = [
    "tok%65n",
    "%74oken",
    "%74%6F%6B%65%6E",
    "to%6Ben",
    "TO%6bEN",
    "%2574oken",
    "%252574oken",
]


@pytest.mark.parametrize("key", [*ENCODED_TOKEN_KEYS, "access_token", "access%5Ftoken", "refresh_token"])
def test_redaction_masks_a_token_whatever_the_encoding_of_its_key(key: str) -> None:
    record = redacted(
        logging.LogRecord(
            "uvicorn.error",
            logging.INFO,
            __file__,
            1,
            '%s - "WebSocket %s" [accepted]',
            ("127.0.0.1:5000", f"/ws/1?after_seq=2&{key}=SECRET-VALUE"),
            None,
        )
    )
    assert (
        record.getMessage() == f'127.0.0.1:5000 - "WebSocket /ws/1?after_seq=2&{key}=[redacted]" [accepted]'
    )


def test_redaction_masks_every_copy_of_a_repeated_token() -> None:
    record = redacted(
        logging.LogRecord("x", logging.INFO, __file__, 1, "%s", ("/ws/1?token=FIRST&tok%65n=SECOND",), None)
    )
    assert record.getMessage() == "/ws/1?token=[redacted]&tok%65n=[redacted]"


def test_redaction_masks_a_token_whose_equals_sign_is_encoded_too() -> None:
    record = redacted(
        logging.LogRecord("x", logging.INFO, __file__, 1, "/ws/1?token%3DSECRET&a=1", None, None)
    )
    assert record.getMessage() == "/ws/1?[redacted]&a=1"


def test_redaction_masks_a_jwt_whose_dots_are_encoded() -> None:
    encoded = JWT.replace(".", "%2E")
    record = redacted(logging.LogRecord("x", logging.INFO, __file__, 1, "see %s", (encoded,), None))
    assert record.getMessage() == "see [redacted]"


@pytest.mark.parametrize("key", ["q", "%71", "Q"])
def test_redaction_masks_the_words_of_a_search(key: str) -> None:
    record = redacted(
        logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", f"/search?limit=5&{key}=my+diagnosis&chat_id=3", "1.1", 200),
            None,
        )
    )
    assert (
        record.getMessage()
        == f'127.0.0.1:5000 - "GET /search?limit=5&{key}=[redacted]&chat_id=3 HTTP/1.1" 200'
    )


@pytest.mark.parametrize(
    "path", ["/users?search=tok%65n", "/history/3?after_seq=5&limit=50", "/chats?x=token"]
)
def test_redaction_leaves_other_parameters_alone(path: str) -> None:
    assert redacted(logging.LogRecord("x", logging.INFO, __file__, 1, path, None, None)).getMessage() == path


def test_the_server_log_masks_tokens_however_their_key_or_value_is_encoded(
    sqlite_url: str, tmp_path: Path
) -> None:
    """uvicorn's access lines and its WebSocket lines (``uvicorn.error``), from a real server."""
    server = start_server(sqlite_url, tmp_path / "server.log", args=["--access-log"])
    try:
        with server.http() as http:
            api = Api(http)
            ada, bob = api.people("Ada", "Bob")
            chat_id = api.private_chat(ada, bob)["id"]
            # The server itself reads an encoded key as ``token``: this socket is Ada's.
            with connect(f"{server.ws_url}/ws/{chat_id}?tok%65n={ada.token}", open_timeout=5) as socket:
                assert send_and_confirm(socket, "encoded-key")["sender_id"] == ada.id
            queries = [f"{key}={ada.token}" for key in ENCODED_TOKEN_KEYS] + [
                f"token={bob.token}&token={ada.token}",
                f"token%3D{ada.token}",
                f"token={ada.token.replace('.', '%2E')}",
            ]
            for query in queries:
                http.get(f"/users/me?{query}")
                with connect(f"{server.ws_url}/ws/{chat_id}?{query}", open_timeout=5):
                    pass
            http.get("/users/me?last=1")
            with connect(f"{server.ws_url}/ws/{chat_id}?last=1", open_timeout=5):
                pass
        wait_for(lambda: '"GET /users/me?last=1' in server.log() and f"/ws/{chat_id}?last=1" in server.log())
        log = server.log()
    finally:
        stop_server(server)
    assert f'"WebSocket /ws/{chat_id}?tok%65n=[redacted]"' in log
    assert '"GET /users/me?%2574oken=[redacted] HTTP/1.1" 401' in log
    for token in (ada.token, bob.token):
        assert token not in log
        assert token.split(".")[2] not in log  # not even the signature


def test_redaction_reduces_a_websocket_data_frame_to_its_kind_and_size() -> None:
    frame = Frame(Opcode.TEXT, b'{"type": "auth", "token": "' + JWT.encode() + b'"}')
    record = redacted(logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "< %s", (frame,), None))
    assert record.getMessage() == f"< TEXT [{len(frame.data)} bytes]"


def test_redaction_keeps_a_websocket_close_frame_readable() -> None:
    frame = Frame(Opcode.CLOSE, Close(4403, "removed from this chat").serialize())
    record = redacted(logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, "> %s", (frame,), None))
    assert record.getMessage() == "> CLOSE 4403 (private use) removed from this chat [24 bytes]"
