"""Numbers out of range and nesting too deep get a clear 4xx, never a 500 from the database or decoder."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.api import Account, Api
from tests.conftest import make_settings, run
from windi_chat.database import create_db_config

TOO_BIG = 2**63  # one past a BIGINT
LARGEST = 2**63 - 1


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _post_json_text(api: Api, path: str, account: Account, body: str) -> httpx.Response:
    headers = {**account.headers, "Content-Type": "application/json"}
    return api.http.post(path, content=body.encode(), headers=headers)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/chats/{big}"),
        ("GET", "/chats/-1"),
        ("GET", "/chats/0"),
        ("GET", "/history/{big}"),
        ("POST", "/chats/{big}/messages"),
        ("POST", "/chats/{big}/read"),
        ("POST", "/groups/{big}/add_user/{me}"),
        ("POST", "/groups/{chat}/add_user/{big}"),
        ("POST", "/groups/{big}/remove_user/{me}"),
        ("POST", "/groups/{chat}/remove_user/{big}"),
    ],
)
def test_an_id_out_of_range_in_a_path_is_404(api: Api, make_account: Any, method: str, path: str) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")
    url = path.format(big=TOO_BIG, me=ada.id, chat=chat["id"])
    body = {"text": "hi", "client_id": "c1"} if url.endswith("/messages") else {"seq": 0}

    response = api.call(method, url, ada, json=body if method == "POST" else None, expect=None)

    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "params",
    [
        {"offset": 2**31},
        {"offset": TOO_BIG},
        {"offset": -1},
        {"after_seq": TOO_BIG},
        {"before_seq": TOO_BIG},
        {"after_seq": -1},
        {"limit": TOO_BIG},
    ],
)
def test_a_paging_number_out_of_range_is_400(api: Api, make_account: Any, params: dict[str, int]) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")

    response = api.call("GET", f"/history/{chat['id']}", ada, params=params, expect=None)

    assert response.status_code == 400, response.text
    assert next(iter(params)) in response.text


@pytest.mark.parametrize("params", [{"offset": 2**31 - 1}, {"after_seq": LARGEST}, {"before_seq": LARGEST}])
def test_the_largest_paging_numbers_are_an_empty_or_full_page(
    api: Api, make_account: Any, params: dict[str, int]
) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")
    api.send(ada, chat["id"], "hello")

    page = api.history(ada, chat["id"], **params)

    assert [m["text"] for m in page] == ([] if "before_seq" not in params else ["hello"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chats", {"type": "private", "user_id": TOO_BIG}),
        ("/chats", {"type": "private", "user_id": 0}),
        ("/chats", {"type": "group", "name": "Team", "member_ids": [TOO_BIG]}),
        ("/chats/{chat}/read", {"seq": TOO_BIG}),
        ("/chats/{chat}/read", {"seq": -1}),
    ],
)
def test_an_id_out_of_range_in_a_body_is_400(
    api: Api, make_account: Any, path: str, body: dict[str, Any]
) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")

    response = api.call("POST", path.format(chat=chat["id"]), ada, json=body, expect=None)

    assert response.status_code == 400, response.text


@pytest.mark.parametrize("session_id", ["ab%00cd", "ab%01cd", "%E2%80%AE", "x" * 33, "no.dots"])
def test_revoking_a_malformed_session_id_is_404(api: Api, make_account: Any, session_id: str) -> None:
    ada = make_account("Ada")

    response = api.call("DELETE", f"/sessions/{session_id}", ada, expect=None)

    assert response.status_code == 404, response.text
    assert len(api.sessions(ada)) == 1


@pytest.mark.parametrize(
    ("path", "levels"),
    [("/chats", 33), ("/chats", 100_000), ("/chats/{chat}/messages", 5_000), ("/register", 1_000)],
)
def test_json_nested_too_deep_is_400(api: Api, make_account: Any, path: str, levels: int) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")
    body = '{"type": "group", "name": ' + _deep(levels) + "}"

    response = _post_json_text(api, path.format(chat=chat["id"]), ada, body)

    assert response.status_code == 400, response.text
    assert "nest" in response.json()["detail"]


def test_json_nested_to_the_limit_gets_the_ordinary_validation_answer(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    body = json.dumps({"type": "group", "name": json.loads(_deep(31))})

    response = _post_json_text(api, "/chats", ada, body)

    assert response.status_code == 400
    assert "nest" not in response.json()["detail"]


def test_brackets_inside_a_text_are_not_nesting(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")
    text = "[{" * 200 + ' \\" ' + "}]" * 200

    sent = api.send(ada, chat["id"], text)

    assert sent["text"] == text


def test_a_failed_statement_does_not_carry_its_parameters(database_url: str) -> None:
    """What the log would show of a failed query: the SQL, never the message text or email in it."""
    engine = create_db_config(make_settings(database_url)).get_engine()
    secret = "a private message text"
    query = text("SELECT * FROM no_such_table WHERE body = :body")

    async def fail() -> str:
        try:
            async with engine.connect() as connection:
                await connection.execute(query, {"body": secret})
        except DBAPIError as exc:
            return str(exc)
        finally:
            await engine.dispose()
        return ""

    error = run(fail())

    assert "no_such_table" in error
    assert secret not in error
