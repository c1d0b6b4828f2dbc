"""A NUL character, which PostgreSQL text cannot hold, is refused with 400 wherever it can reach a query."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api import PASSWORD, Api

NUL = "\u0000"


@pytest.mark.parametrize(
    "body",
    [
        {"name": f"Ada{NUL}", "email": "ada@example.com", "password": PASSWORD},
        {"name": "Ada", "email": f"ada{NUL}@example.com", "password": PASSWORD},
    ],
)
def test_registering_with_a_nul_is_refused(api: Api, body: dict[str, Any]) -> None:
    response = api.call("POST", "/register", json=body, expect=None)
    assert response.status_code == 400


def test_logging_in_with_a_nul_in_the_email_is_refused(api: Api, make_account: Any) -> None:
    make_account("Ada")
    response = api.call(
        "POST", "/login", data={"username": f"ada{NUL}@example.com", "password": PASSWORD}, expect=None
    )
    assert response.status_code == 400


def test_searching_people_with_a_nul_is_refused(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    response = api.call("GET", "/users", ada, params={"search": f"a{NUL}"}, expect=None)
    assert response.status_code == 400


def test_a_group_named_with_a_nul_is_refused(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    response = api.call("POST", "/chats", ada, json={"type": "group", "name": f"Team{NUL}"}, expect=None)
    assert response.status_code == 400
