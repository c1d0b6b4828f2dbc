"""Message search over REST, on SQLite (FTS5) and PostgreSQL (a GIN index)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import pytest
from litestar.testing import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.api import Account, Api
from tests.conftest import fetch, insert_messages, make_settings, run
from windi_chat.app import create_app
from windi_chat.errors import SearchBusyError
from windi_chat.search import SearchSlots, parse_query


def search(api: Api, account: Account, q: str, *, expect: int = 200, **params: Any) -> Any:
    return api.call("GET", "/search", account, params={"q": q, **params}, expect=expect)


def texts(found: list[dict[str, Any]]) -> list[str]:
    return [message["text"] for message in found]


async def _execute(url: str, statement: str, params: dict[str, Any]) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


def execute(url: str, statement: str, **params: Any) -> None:
    """Change rows straight in the database and commit, as an edit or a delete would."""
    run(_execute(url, statement, params))


@pytest.fixture
def group(api: Api, make_account: Any) -> tuple[Account, Account, int]:
    """Ada's group with Bob in it."""
    ada, bob = make_account("Ada"), make_account("Bob")
    return ada, bob, api.group(ada, "Garden", [bob])["id"]


# What is found --------------------------------------------------------------------------------------


def test_a_word_finds_the_messages_that_hold_it_as_message_objects(api: Api, group: Any) -> None:
    ada, bob, chat_id = group
    sent = api.send(ada, chat_id, "The tomatoes are ripe")
    api.send(bob, chat_id, "Cucumbers too")
    api.send(bob, chat_id, "tomatoes, TOMATOES!")
    found = search(api, bob, "Tomatoes")
    assert set(texts(found)) == {"The tomatoes are ripe", "tomatoes, TOMATOES!"}
    first = next(message for message in found if message["id"] == sent["id"])
    assert first == {**sent, "read": first["read"]}
    assert set(first) >= {"rev", "reply_to", "edited_at", "deleted", "reactions"}


def test_search_carries_each_message_s_reactions(api: Api, group: Any, database_url: str) -> None:
    ada, bob, chat_id = group
    other = api.private_chat(ada, bob)["id"]
    soup, pie = api.send(ada, chat_id, "pumpkin soup tonight"), api.send(bob, other, "pumpkin pie")
    for place, emoji, person, rev in (
        (soup, "👍", bob, 10),
        (soup, "🎉", ada, 11),
        (soup, "👍", ada, 12),
        (pie, "😋", ada, 13),
    ):
        execute(
            database_url,
            "INSERT INTO message_reactions (chat_id, seq, emoji, user_id, rev) "
            "VALUES (:chat, :seq, :emoji, :user, :rev)",
            chat=place["chat_id"],
            seq=place["seq"],
            emoji=emoji,
            user=person.id,
            rev=rev,
        )
    found = {message["id"]: message["reactions"] for message in search(api, ada, "pumpkin")}
    assert found == {
        soup["id"]: [{"emoji": "👍", "user_ids": [bob.id, ada.id]}, {"emoji": "🎉", "user_ids": [ada.id]}],
        pie["id"]: [{"emoji": "😋", "user_ids": [ada.id]}],
    }


def test_words_of_any_script_are_found_whatever_their_case(api: Api, group: Any) -> None:
    ada, _bob, chat_id = group
    api.send(ada, chat_id, "Привет, МИР")
    api.send(ada, chat_id, "Ärger im Büro")
    api.send(ada, chat_id, "東京 タワー")
    assert texts(search(api, ada, "мир")) == ["Привет, МИР"]
    assert texts(search(api, ada, "ärger")) == ["Ärger im Büro"]
    assert texts(search(api, ada, "タワー")) == ["東京 タワー"]


def test_every_word_must_appear_and_quotes_keep_words_together(api: Api, group: Any) -> None:
    ada, _bob, chat_id = group
    api.send(ada, chat_id, "red apples and green pears")
    api.send(ada, chat_id, "green apples")
    assert set(texts(search(api, ada, "apples green"))) == {"red apples and green pears", "green apples"}
    assert texts(search(api, ada, '"green apples"')) == ["green apples"]
    assert texts(search(api, ada, "apples -pears")) == ["green apples"]
    assert set(texts(search(api, ada, "pears or green"))) == {"red apples and green pears", "green apples"}


def test_only_exclusions_find_nothing(api: Api, group: Any) -> None:
    ada, _bob, chat_id = group
    api.send(ada, chat_id, "something")
    assert search(api, ada, "-nothing") == []
    assert search(api, ada, "!!! ???") == []


# Whose messages -------------------------------------------------------------------------------------


def test_only_chats_the_caller_is_in_are_searched(api: Api, group: Any, make_account: Any) -> None:
    ada, bob, chat_id = group
    eve = make_account("Eve")
    other = api.private_chat(eve, ada)["id"]
    api.send(ada, chat_id, "secret recipe")
    api.send(eve, other, "secret party")
    assert texts(search(api, bob, "secret")) == ["secret recipe"]
    assert texts(search(api, eve, "secret")) == ["secret party"]
    assert set(texts(search(api, ada, "secret"))) == {"secret recipe", "secret party"}


def test_a_removed_member_finds_nothing_of_the_chat(api: Api, group: Any) -> None:
    ada, bob, chat_id = group
    api.send(bob, chat_id, "my own words")
    assert len(search(api, bob, "words")) == 1
    api.remove_member(ada, chat_id, bob)
    assert search(api, bob, "words") == []
    search(api, bob, "words", chat_id=chat_id, expect=404)


def test_a_member_who_left_finds_nothing_of_the_chat(api: Api, group: Any) -> None:
    ada, bob, chat_id = group
    api.send(ada, chat_id, "farewell dinner")
    api.remove_member(bob, chat_id, bob)
    assert search(api, bob, "farewell") == []


def test_chat_id_narrows_the_search_to_that_chat(api: Api, group: Any, make_account: Any) -> None:
    ada, bob, chat_id = group
    other = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "meeting in the garden")
    api.send(ada, other, "meeting at home")
    assert texts(search(api, bob, "meeting", chat_id=other)) == ["meeting at home"]
    assert texts(search(api, bob, "meeting", chat_id=chat_id)) == ["meeting in the garden"]
    assert search(api, bob, "nowhere", chat_id=chat_id) == []


def test_chat_id_of_a_chat_you_are_not_in_is_not_found(api: Api, group: Any, make_account: Any) -> None:
    ada, _bob, chat_id = group
    eve = make_account("Eve")
    api.send(ada, chat_id, "hello")
    search(api, eve, "hello", chat_id=chat_id, expect=404)
    search(api, eve, "hello", chat_id=chat_id + 1000, expect=404)
    for out_of_range in (0, -1, 2**63, 10**30):
        search(api, eve, "hello", chat_id=out_of_range, expect=404)


def test_search_needs_a_token(api: Api) -> None:
    assert api.call("GET", "/search", params={"q": "x"}, expect=None).status_code == 401


# Edits and deletes ----------------------------------------------------------------------------------


def test_an_edited_message_is_found_by_its_new_text_only(api: Api, group: Any, database_url: str) -> None:
    ada, _bob, chat_id = group
    sent = api.send(ada, chat_id, "see you at noon")
    execute(
        database_url, "UPDATE messages SET text = :text WHERE id = :id", text="see you at dusk", id=sent["id"]
    )
    assert search(api, ada, "noon") == []
    assert texts(search(api, ada, "dusk")) == ["see you at dusk"]


def test_a_deleted_message_is_never_found(api: Api, group: Any, database_url: str) -> None:
    ada, _bob, chat_id = group
    gone, kept = api.send(ada, chat_id, "wrong chat, sorry"), api.send(ada, chat_id, "sorry again")
    execute(database_url, "UPDATE messages SET text = '', deleted = true WHERE id = :id", id=gone["id"])
    assert [message["id"] for message in search(api, ada, "sorry")] == [kept["id"]]


def test_a_message_flagged_deleted_is_not_found_even_with_its_text(
    api: Api, group: Any, database_url: str
) -> None:
    ada, _bob, chat_id = group
    sent = api.send(ada, chat_id, "half deleted")
    execute(database_url, "UPDATE messages SET deleted = true WHERE id = :id", id=sent["id"])
    assert search(api, ada, "deleted") == []
    execute(database_url, "UPDATE messages SET deleted = false WHERE id = :id", id=sent["id"])
    assert texts(search(api, ada, "deleted")) == ["half deleted"]


def test_a_hard_deleted_row_leaves_the_index(api: Api, group: Any, database_url: str) -> None:
    ada, _bob, chat_id = group
    sent = api.send(ada, chat_id, "ephemeral note")
    execute(database_url, "DELETE FROM messages WHERE id = :id", id=sent["id"])
    assert search(api, ada, "ephemeral") == []


# Order and limits -----------------------------------------------------------------------------------


def test_more_relevant_messages_come_first_then_newer_ones(api: Api, group: Any) -> None:
    ada, bob, chat_id = group
    api.send(ada, chat_id, "kiwi kiwi kiwi")
    older = api.send(bob, chat_id, "a kiwi in a long sentence about many other fruits and vegetables")
    newer = api.send(ada, chat_id, "a kiwi in a long sentence about many other fruits and vegetables")
    found = search(api, ada, "kiwi")
    assert found[0]["text"] == "kiwi kiwi kiwi"
    assert [message["id"] for message in found[1:]] == [newer["id"], older["id"]]


def test_equally_relevant_messages_come_newest_first(api: Api, group: Any, database_url: str) -> None:
    ada, _bob, chat_id = group
    insert_messages(database_url, chat_id, ada.id, [f"plum number {n}" for n in range(30)])
    found = search(api, ada, "plum", limit=50)
    assert texts(found) == [f"plum number {n}" for n in reversed(range(30))]


def test_limit_is_20_by_default_and_at_most_50(api: Api, group: Any, database_url: str) -> None:
    ada, _bob, chat_id = group
    insert_messages(database_url, chat_id, ada.id, ["fig"] * 60)
    assert len(search(api, ada, "fig")) == 20
    assert len(search(api, ada, "fig", limit=1)) == 1
    assert len(search(api, ada, "fig", limit=50)) == 50
    for bad in (0, 51, -1, "many"):
        search(api, ada, "fig", limit=bad, expect=400)


def test_only_the_newest_candidates_are_ranked(database_url: str) -> None:
    with TestClient(app=create_app(make_settings(database_url, search_candidates=3))) as client:
        api = Api(client)
        ada, bob = api.account("Ada"), api.account("Bob")
        chat_id = api.private_chat(ada, bob)["id"]
        api.send(ada, chat_id, "lime lime lime")  # the most relevant, but older than three others
        for n in range(3):
            api.send(ada, chat_id, f"lime number {n} of a longer message")
        found = search(api, ada, "lime", limit=3)
        assert len(found) == 3
        assert "lime lime lime" not in texts(found)
        assert len(search(api, ada, "lime", limit=4)) == 4  # the limit widens the window


# Bad queries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", ["", " ", "\t\n"])
def test_an_empty_query_is_refused(api: Api, group: Any, q: str) -> None:
    search(api, group[0], q, expect=400)


def test_a_missing_query_is_refused(api: Api, group: Any) -> None:
    api.call("GET", "/search", group[0], expect=400)


def test_a_query_longer_than_the_setting_is_refused(database_url: str) -> None:
    with TestClient(app=create_app(make_settings(database_url, search_max_query_length=8))) as client:
        api = Api(client)
        ada, bob = api.account("Ada"), api.account("Bob")
        chat_id = api.private_chat(ada, bob)["id"]
        api.send(ada, chat_id, "abcdefgh")
        assert texts(search(api, ada, "abcdefgh")) == ["abcdefgh"]
        body = search(api, ada, "abcdefghi", expect=400)
        assert "8" in body["detail"]


def test_searches_past_the_rate_are_refused_with_retry_after(database_url: str) -> None:
    settings = make_settings(database_url, search_rate=0.01, search_burst=2)
    with TestClient(app=create_app(settings)) as client:
        api = Api(client)
        ada, bob = api.people("Ada", "Bob")
        api.send(ada, api.private_chat(ada, bob)["id"], "hello")
        assert texts(search(api, ada, "hello")) == ["hello"]
        assert texts(search(api, ada, "hello")) == ["hello"]
        response = api.call("GET", "/search", ada, params={"q": "hello"}, expect=None)
        assert response.status_code == 429
        assert response.json()["detail"] == "Too many searches; slow down"
        assert int(response.headers["Retry-After"]) >= 1
        assert texts(search(api, bob, "hello")) == ["hello"]  # one person's allowance, not everyone's


def test_a_search_past_its_time_limit_answers_503_and_frees_its_connection(postgres_url: str) -> None:
    """A search blocked by a lock on the messages stops at WINDI_SEARCH_TIMEOUT_SECONDS."""
    settings = make_settings(postgres_url, search_timeout_seconds=0.2)
    with TestClient(app=create_app(settings)) as client:
        api = Api(client)
        ada, bob = api.people("Ada", "Bob")
        api.send(ada, api.private_chat(ada, bob)["id"], "hello")
        locked, release = threading.Event(), threading.Event()

        async def hold_lock() -> None:
            dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
            connection = await asyncpg.connect(dsn)
            try:
                async with connection.transaction():
                    await connection.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                    locked.set()
                    await asyncio.get_running_loop().run_in_executor(None, release.wait, 60)
            finally:
                await connection.close()

        holder = threading.Thread(target=asyncio.run, args=(hold_lock(),))
        holder.start()
        try:
            assert locked.wait(30)
            body = search(api, ada, "hello", expect=503)
            assert body["detail"] == "Search is busy or this search took too long; try again, or narrow it"
        finally:
            release.set()
            holder.join(30)
        assert texts(search(api, ada, "hello")) == ["hello"]


def test_searches_past_the_slots_wait_at_most_the_time_limit_then_are_refused() -> None:
    async def scenario() -> None:
        slots = SearchSlots(1, 0.05)
        async with slots.slot():
            with pytest.raises(SearchBusyError):
                async with slots.slot():
                    pass
        async with slots.slot():  # freed again
            pass

    asyncio.run(scenario())


HOSTILE = [
    '"',
    '""',
    '"unclosed phrase',
    "'",
    "''",
    "a'b",
    "\\",
    "%",
    "_",
    "*",
    "a*",
    "^",
    "-",
    "--",
    "- -",
    "or",
    "OR OR OR",
    "a or",
    "or a",
    "-or",
    "NOT",
    "a NOT b",
    "AND",
    "NEAR(a b)",
    "a:b",
    "text:secret",
    "{text}: secret",
    "a & b | !c",
    "a <-> b",
    "(a",
    "a)",
    "!",
    "!!a",
    "'a':*",
    "a:*B",
    "\u202e\u2066",
    "\U0001f600",
    "e\u0301",
    "\ufeff",
    "\u200b",
    "x" * 256,
    "a " * 128,
    '"a" ' * 64,
    "-a " * 128,
    "; DROP TABLE messages; --",
    "'); DELETE FROM messages; --",
]


@pytest.mark.parametrize("q", HOSTILE)
def test_hostile_queries_never_fail(api: Api, group: Any, q: str) -> None:
    ada, _bob, chat_id = group
    api.send(ada, chat_id, "a b c text secret")
    response = api.call("GET", "/search", ada, params={"q": q}, expect=None)
    assert response.status_code in (200, 400), response.text
    assert fetch_count(api, ada) == 1


def fetch_count(api: Api, account: Account) -> int:
    return len(search(api, account, "secret"))


@pytest.mark.parametrize("q", ["\x00", "a\x00b", "a\x1bb", "\x7f"])
def test_control_characters_are_refused(api: Api, group: Any, q: str) -> None:
    search(api, group[0], q, expect=400)


def test_raw_bytes_that_are_not_utf8_never_fail(api: Api, group: Any) -> None:
    ada = group[0]
    for raw in ("%FF", "%ED%A0%80", "%C0%80", "%00"):
        response = api.http.get(f"/search?q=a{raw}b", headers=ada.headers)
        assert response.status_code in (200, 400), response.text


def test_queries_parse_like_a_web_search() -> None:
    query = parse_query('big "red apple" -worm or pear', 256)
    assert query.websearch() == '"big" "red apple" -"worm" or "pear"'
    assert query.fts5() == '("big" AND "red apple") NOT ("worm") OR ("pear")'
    assert parse_query('say "hi""', 256).fts5() == '("say" AND "hi")'
    assert not parse_query("-only or -exclusions", 256)
    assert parse_query('this "or" that', 256).websearch() == '"this" "or" "that"'
    assert parse_query("OR this or", 256).websearch() == '"this"'


# One indexed query ----------------------------------------------------------------------------------


def test_postgres_answers_from_the_gin_index(api: Api, group: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the GIN plan is PostgreSQL's")
    ada, _bob, chat_id = group
    insert_messages(database_url, chat_id, ada.id, [f"filler message {n}" for n in range(200)] + ["needle"])
    plan = explain_pg(database_url, ada.id, "needle")
    assert "ix_messages_text_search" in plan
    assert "Seq Scan on messages" not in plan


async def _explain_pg(url: str, user_id: int, q: str) -> str:
    from windi_chat.search import parse_query
    from windi_chat.search_sql import PG_SEARCH

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("ANALYZE messages"))
            await connection.execute(text("SET enable_seqscan = off"))
            parameters = {
                "q": parse_query(q, 256).websearch(),
                "person": user_id,
                "candidates": 200,
                "limit": 20,
            }
            rows = (
                await connection.execute(text("EXPLAIN " + PG_SEARCH[False].element.text), parameters)
            ).all()
            return "\n".join(row[0] for row in rows)
    finally:
        await engine.dispose()


def explain_pg(url: str, user_id: int, q: str) -> str:
    return str(run(_explain_pg(url, user_id, q)))


def test_sqlite_answers_from_the_fts_table(api: Api, group: Any, database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the FTS5 plan is SQLite's")
    ada, _bob, chat_id = group
    api.send(ada, chat_id, "needle")
    from windi_chat.search import parse_query
    from windi_chat.search_sql import SQLITE_SEARCH

    sql = SQLITE_SEARCH[False].element.text
    parameters = {"q": parse_query("needle", 256).fts5(), "person": ada.id, "candidates": 200, "limit": 20}
    plan = "\n".join(str(row[-1]) for row in fetch(database_url, f"EXPLAIN QUERY PLAN {sql}", **parameters))
    assert "VIRTUAL TABLE INDEX" in plan
    assert "messages_fts" in plan
    scanned = [line.split()[1] for line in plan.splitlines() if line.strip().startswith("SCAN")]
    assert scanned == ["messages_fts", "c"], plan  # c: the newest matches, at most ``candidates``
    assert plan.count("TEMP B-TREE") == 1, plan  # only those are sorted by rank


def test_search_is_documented(client: TestClient[Any]) -> None:
    operation = client.get("/docs/openapi.json").json()["paths"]["/search"]["get"]
    assert operation["operationId"] == "searchMessages"
    assert {"200", "400", "404"} <= set(operation["responses"])
