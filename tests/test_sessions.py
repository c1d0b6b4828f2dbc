"""Sessions over REST: login, refresh with rotation and reuse detection, logout, listing and revoking
sessions, changing the password; and the revocation check that needs no database round trip per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from litestar.testing import TestClient
from sqlalchemy import event

from tests.api import PASSWORD, Account, Api
from tests.conftest import TEST_SECRET, app_engine, fetch, make_settings, run, wait_for
from windi_chat.app import create_app


def claims_of(account: Account) -> dict[str, Any]:
    return dict(jwt.decode(account.token, TEST_SECRET, algorithms=["HS256"]))


def session_id(account: Account) -> str:
    return str(claims_of(account)["sid"])


async def _execute(url: str, statement: str, **params: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            if engine.dialect.name == "sqlite":  # as the server has it: deletes cascade
                await connection.execute(text("PRAGMA foreign_keys=ON"))
            await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


def execute(url: str, statement: str, **params: Any) -> None:
    """Change the database behind the server's back, as an operator would."""
    run(_execute(url, statement, **params))


@pytest.fixture
def small_client(database_url: str, request: pytest.FixtureRequest) -> Iterator[TestClient[Any]]:
    """An app with the settings the test's ``settings`` marker names."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    with TestClient(app=create_app(make_settings(database_url, **overrides))) as test_client:
        yield test_client


# Login --------------------------------------------------------------------------------------------


def test_login_answers_a_short_lived_access_token_of_a_new_session_and_a_refresh_token(api: Api) -> None:
    api.register("Ada", "ada@example.com")
    body = api.login("ada@example.com")
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"])
    assert claims["sid"]
    assert claims["jti"]
    assert claims["exp"] - claims["iat"] == 900
    second = api.login("ada@example.com")
    assert jwt.decode(second["access_token"], TEST_SECRET, algorithms=["HS256"])["sid"] != claims["sid"]
    assert second["refresh_token"] != body["refresh_token"]


def test_refresh_tokens_are_stored_only_as_hashes(api: Api, database_url: str) -> None:

    ada = api.account("Ada")
    stored = [row[0] for row in fetch(database_url, "SELECT token_hash FROM refresh_tokens")]
    assert stored
    assert ada.refresh_token not in stored


# Refresh ------------------------------------------------------------------------------------------


def test_refresh_answers_like_login_with_a_new_refresh_token_on_the_same_session(api: Api) -> None:
    ada = api.account("Ada")
    body = api.refresh(ada.refresh_token)
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["refresh_token"] != ada.refresh_token
    renewed = ada.with_tokens(body)
    assert session_id(renewed) == session_id(ada)
    assert api.me(renewed)["id"] == ada.id
    assert api.refresh(renewed.refresh_token)["refresh_token"]


def test_a_spent_refresh_token_presented_again_revokes_the_whole_session(api: Api) -> None:
    ada = api.account("Ada")
    other_device = api.session_of(ada)
    renewed = ada.with_tokens(api.refresh(ada.refresh_token))

    api.refresh(ada.refresh_token, expect=401)  # the copy

    api.refresh(renewed.refresh_token, expect=401)
    api.me(renewed, expect=401)
    api.me(ada, expect=401)
    api.me(other_device)  # another session is not touched


@pytest.mark.parametrize("token", ["", "x" * 257, "not-a-token-we-issued"])
def test_an_unknown_or_malformed_refresh_token_is_refused(api: Api, token: str) -> None:
    api.account("Ada")
    api.refresh(token, expect=(400, 401) if len(token) in (0, 257) else 401)


def test_refresh_with_a_body_that_is_not_the_schema_is_400(api: Api) -> None:
    api.call("POST", "/token/refresh", json={"token": "x"}, expect=400)
    api.call("POST", "/token/refresh", content=b"not json", expect=400)


def test_the_refresh_token_of_a_logged_out_session_is_refused(api: Api) -> None:
    ada = api.account("Ada")
    api.logout(ada)
    api.refresh(ada.refresh_token, expect=401)


@pytest.mark.settings(refresh_ttl_seconds=1)
def test_an_expired_refresh_token_is_refused(small_client: TestClient[Any]) -> None:
    api = Api(small_client)
    ada = api.account("Ada")
    # The session leaves the list of live sessions when its refresh token expires.
    wait_for(lambda: api.sessions(ada) == [], timeout=10)
    api.refresh(ada.refresh_token, expect=401)


# Logout and revocation -------------------------------------------------------------------------


def test_logout_revokes_the_callers_session_everywhere_on_rest(api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    other_device = api.session_of(ada)
    api.logout(ada)
    api.me(ada, expect=401)
    api.chats(ada, expect=401)
    api.private_chat(ada, bob, expect=401)
    api.call("GET", "/users", ada, params={"search": "b"}, expect=401)
    api.logout(ada, expect=401)
    api.me(other_device)


def test_sessions_lists_the_callers_live_sessions_and_marks_the_current_one(api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    form = {"username": ada.email, "password": PASSWORD}
    answer = api.http.post("/login", data=form, headers={"User-Agent": "phone/1.0"})
    phone = ada.with_tokens(answer.json())
    gone = api.session_of(ada)
    api.logout(gone)

    listed = api.sessions(phone)
    assert {s["id"] for s in listed} == {session_id(ada), session_id(phone)}
    assert set(listed[0]) == {"id", "created_at", "last_used_at", "user_agent", "current"}
    by_id = {s["id"]: s for s in listed}
    assert by_id[session_id(phone)]["current"] is True
    assert by_id[session_id(phone)]["user_agent"] == "phone/1.0"
    assert by_id[session_id(ada)]["current"] is False
    assert session_id(bob) not in by_id


def test_revoking_one_session_ends_it_and_leaves_the_others(api: Api) -> None:
    ada = api.account("Ada")
    laptop = api.session_of(ada)
    api.revoke_session(laptop, session_id(ada))
    api.me(ada, expect=401)
    api.refresh(ada.refresh_token, expect=401)
    api.me(laptop)
    assert [s["id"] for s in api.sessions(laptop)] == [session_id(laptop)]


@pytest.mark.parametrize("whose", ["another-persons", "unknown", "already-revoked"])
def test_revoking_a_session_that_is_not_one_of_the_callers_live_ones_is_404(api: Api, whose: str) -> None:
    ada, eve = api.people("Ada", "Eve")
    spent = api.session_of(ada)
    api.logout(spent)
    target = {
        "another-persons": session_id(ada),
        "unknown": "no-such-session",
        "already-revoked": session_id(spent),
    }
    caller = eve if whose == "another-persons" else ada
    api.revoke_session(caller, target[whose], expect=404)
    api.me(ada)


def test_revoking_all_other_sessions_keeps_only_the_current_one(api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    others = [api.session_of(ada) for _ in range(3)]
    api.revoke_other_sessions(ada)
    for other in others:
        api.me(other, expect=401)
        api.refresh(other.refresh_token, expect=401)
    api.me(ada)
    api.me(bob)
    assert [s["id"] for s in api.sessions(ada)] == [session_id(ada)]


# Password -------------------------------------------------------------------------------------------


def test_changing_the_password_revokes_every_other_session_and_the_new_one_works_at_once(api: Api) -> None:
    ada = api.account("Ada")
    other = api.session_of(ada)
    api.change_password(ada, PASSWORD, "a brand new passphrase")
    api.me(ada)
    api.me(other, expect=401)
    api.refresh(other.refresh_token, expect=401)
    api.login(ada.email, "a brand new passphrase")
    api.login(ada.email, PASSWORD, expect=401)


def test_changing_the_password_with_a_wrong_current_one_is_403_and_changes_nothing(api: Api) -> None:
    ada = api.account("Ada")
    other = api.session_of(ada)
    api.change_password(ada, "not the password", "a brand new passphrase", expect=403)
    api.me(other)
    api.login(ada.email, PASSWORD)


def test_a_new_password_shorter_than_eight_characters_is_400(api: Api) -> None:
    ada = api.account("Ada")
    api.change_password(ada, PASSWORD, "short", expect=400)
    api.login(ada.email, PASSWORD)


# Tokens that prove nothing any more ------------------------------------------------------------------


@pytest.mark.settings(session_recheck_seconds=0.2)
def test_a_token_whose_user_no_longer_exists_is_401_everywhere(
    small_client: TestClient[Any], database_url: str
) -> None:
    api = Api(small_client)
    ada, bob = api.people("Ada", "Bob")
    api.me(ada)  # the process has seen this session live
    execute(database_url, "DELETE FROM users WHERE id = :id", id=ada.id)
    wait_for(lambda: api.me(ada, expect=None).status_code == 401, timeout=10)
    api.chats(ada, expect=401)
    api.private_chat(ada, bob, expect=401)
    api.group(ada, "Team", [bob], expect=401)
    api.call("GET", "/users", ada, params={"search": "b"}, expect=401)
    api.sessions(ada, expect=401)


def test_a_revoked_sessions_token_is_401_on_every_route(api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.logout(ada)
    api.send(ada, chat_id, "hi", expect=401)
    api.read(ada, chat_id, 0, expect=401)
    api.history(ada, chat_id, expect=401)
    api.chat(ada, chat_id, expect=401)
    api.sessions(ada, expect=401)
    api.change_password(ada, PASSWORD, "a brand new passphrase", expect=401)


def test_a_refresh_racing_itself_has_one_winner_and_the_loser_revokes_the_session(api: Api) -> None:
    """Two refreshes with one token: one wins, the other counts as reuse (someone holds a copy)."""
    from concurrent.futures import ThreadPoolExecutor

    ada = api.account("Ada")
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: api.refresh(ada.refresh_token, expect=None), range(2)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses in ([200, 401], [401, 401])
    for answer in answers:
        if answer.status_code == 200:
            api.refresh(answer.json()["refresh_token"], expect=401)  # the session was revoked


# The check is cheap -----------------------------------------------------------------------------------


def test_an_authenticated_request_does_not_read_the_session_from_the_database_each_time(
    client: TestClient[Any], api: Api
) -> None:
    ada = api.account("Ada")
    api.me(ada)  # the first request of a session asks the database once
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = app_engine(client.app).sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        for _ in range(20):
            api.me(ada)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements, "the route itself reads the user"
    assert not [s for s in statements if "sessions" in s]


@pytest.mark.settings(session_cache_size=1)
def test_sessions_past_the_cache_size_are_asked_about_again_and_still_work(
    small_client: TestClient[Any],
) -> None:
    api = Api(small_client)
    people = api.people("Ada", "Bob", "Cy")
    for _ in range(3):
        for person in people:
            api.me(person)
    api.logout(people[0])
    api.me(people[0], expect=401)
    api.me(people[1])


# OpenAPI ------------------------------------------------------------------------------------------------


def test_the_openapi_document_shows_every_session_endpoint_with_its_responses(
    client: TestClient[Any],
) -> None:
    document = client.get("/docs/openapi.json").json()
    paths = document["paths"]
    refresh = paths["/token/refresh"]["post"]
    assert refresh["tags"] == ["accounts"]
    assert refresh["security"] == [{}]
    assert {"200", "401"} <= set(refresh["responses"])
    assert paths["/logout"]["post"]["tags"] == ["accounts"]
    assert "204" in paths["/logout"]["post"]["responses"]
    assert "200" in paths["/sessions"]["get"]["responses"]
    assert "204" in paths["/sessions"]["delete"]["responses"]
    assert {"204", "404"} <= set(paths["/sessions/{session_id}"]["delete"]["responses"])
    assert {"204", "403"} <= set(paths["/users/me/password"]["post"]["responses"])
    assert set(document["components"]["schemas"]["TokenOut"]["properties"]) >= {"refresh_token"}


def test_the_password_flow_of_swaggers_authorize_button_still_logs_in(
    client: TestClient[Any], api: Api
) -> None:
    """Swagger UI posts the OAuth2 form with grant_type and scope, and uses the access token it gets."""
    api.register("Ada", "ada@example.com")
    form = {"grant_type": "password", "username": "ada@example.com", "password": PASSWORD, "scope": ""}
    answer = client.post("/login", data=form)
    assert answer.status_code == 200
    me = client.get("/users/me", headers={"Authorization": f"Bearer {answer.json()['access_token']}"})
    assert me.status_code == 200
