"""The change feed over REST, ``GET /chats/{id}/changes``, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.api import Account, Api
from tests.conftest import insert_messages, run, touch


@pytest.fixture
def pair(api: Api, make_account: Any) -> tuple[Account, Account, int]:
    """Ada and Bob, and their private chat."""
    ada, bob = make_account("Ada"), make_account("Bob")
    return ada, bob, api.private_chat(ada, bob)["id"]


def revs_and_seqs(messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(m["rev"], m["seq"]) for m in messages]


def test_the_feed_holds_the_messages_after_a_rev_ascending_by_rev(api: Api, pair: Any) -> None:
    ada, bob, chat_id = pair
    sent = [api.send(ada if n % 2 else bob, chat_id, f"m{n}") for n in range(1, 6)]
    feed = api.changes(bob, chat_id)
    assert feed == api.history(bob, chat_id)  # nothing changed yet: the history, in the same state
    assert revs_and_seqs(feed) == [(m["rev"], m["seq"]) for m in sent]
    assert revs_and_seqs(api.changes(ada, chat_id, after_rev=sent[2]["rev"])) == revs_and_seqs(sent[3:])
    assert api.changes(ada, chat_id, after_rev=sent[-1]["rev"]) == []
    assert api.changes(ada, chat_id, after_rev=10**6) == []
    assert api.changes(ada, chat_id, after_rev=2**63 - 1) == []


def test_a_changed_message_is_there_once_at_its_latest_rev(api: Api, pair: Any, database_url: str) -> None:
    ada, _bob, chat_id = pair
    for n in range(1, 5):
        api.send(ada, chat_id, f"m{n}")
    touch(database_url, chat_id, 2)
    last = touch(database_url, chat_id, 2)
    touch(database_url, chat_id, 1)
    feed = api.changes(ada, chat_id)
    assert [m["seq"] for m in feed] == [3, 4, 2, 1]
    assert [m["rev"] for m in feed] == sorted(m["rev"] for m in feed)
    assert next(m for m in feed if m["seq"] == 2)["rev"] == last
    # Past the first changes: only what changed after them.
    assert [m["seq"] for m in api.changes(ada, chat_id, after_rev=4)] == [2, 1]


def test_the_limit_pages_the_feed_and_defaults_to_100(api: Api, pair: Any, database_url: str) -> None:
    ada, bob, chat_id = pair
    insert_messages(database_url, chat_id, ada.id, [f"old {n}" for n in range(1, 251)])
    assert len(api.changes(bob, chat_id)) == 100
    assert [m["seq"] for m in api.changes(bob, chat_id, limit=1)] == [1]
    page = api.changes(bob, chat_id, limit=200)
    assert [m["seq"] for m in page] == list(range(1, 201))
    rest = api.changes(bob, chat_id, after_rev=page[-1]["rev"], limit=200)
    assert [m["seq"] for m in rest] == list(range(201, 251))


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "many"},
        {"after_rev": -1},
        {"after_rev": "x"},
        {"after_rev": 2**63},
    ],
)
def test_bad_parameters_get_400(api: Api, pair: Any, params: dict[str, Any]) -> None:
    ada, _bob, chat_id = pair
    response = api.changes(ada, chat_id, expect=400, **params)
    assert response["status_code"] == 400


def test_a_non_member_and_a_missing_chat_get_404(api: Api, pair: Any, make_account: Any) -> None:
    ada, _bob, chat_id = pair
    api.send(ada, chat_id, "private")
    eve = make_account("Eve")
    assert api.changes(eve, chat_id, expect=404)["status_code"] == 404
    assert api.changes(eve, chat_id + 1000, expect=404)["status_code"] == 404
    api.call("GET", f"/chats/{chat_id}/changes", None, expect=401)


def test_an_empty_chat_has_an_empty_feed(api: Api, pair: Any) -> None:
    ada, _bob, chat_id = pair
    assert api.changes(ada, chat_id) == []


def plan(database_url: str, statement: str) -> str:
    """The database's plan for ``statement``, with sequential scans priced out on PostgreSQL (the test
    tables are tiny, where a scan would win)."""
    postgres = database_url.startswith("postgresql")

    async def explain() -> str:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                if postgres:
                    await connection.execute(text("SET enable_seqscan = off"))
                rows = await connection.execute(
                    text(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + statement)
                )
                return "\n".join(str(row[-1]) for row in rows)
        finally:
            await engine.dispose()

    result: str = run(explain())
    return result


def test_the_feed_reads_a_range_of_the_chat_rev_index(api: Api, pair: Any, database_url: str) -> None:
    """One indexed range read, however long the chat: no scan of the messages table."""
    found = plan(database_url, "SELECT * FROM messages WHERE chat_id = 1 AND rev > 5 ORDER BY rev LIMIT 100")
    if database_url.startswith("postgresql"):
        assert "Index Scan using uq_messages_chat_rev" in found, found
        assert "Sort" not in found, found
    else:
        assert "USING INDEX" in found, found
        assert "(chat_id=? AND rev>?)" in found, found
        assert "TEMP B-TREE" not in found, found


def test_a_removed_member_reads_no_change_made_after_the_removal(api: Api, make_account: Any) -> None:
    owner, member = make_account("Owner"), make_account("Member")
    chat_id = api.group(owner, "Team", [member])["id"]
    before = api.send(owner, chat_id, "before the removal")
    assert [m["seq"] for m in api.changes(member, chat_id)] == [before["seq"]]
    api.remove_member(owner, chat_id, member)
    api.send(owner, chat_id, "after the removal")
    assert api.changes(member, chat_id, expect=404)["status_code"] == 404
    assert api.changes(member, chat_id, after_rev=before["rev"], expect=404)["status_code"] == 404


# With edits, reactions and deletes -------------------------------------------------------------------


def test_edits_reactions_and_deletes_are_in_the_feed_once_each_in_their_current_state(
    api: Api, pair: Any
) -> None:
    ada, bob, chat_id = pair
    for n in range(1, 6):
        api.send(ada, chat_id, f"m{n}")
    held = api.changes(bob, chat_id)[-1]["rev"]
    api.edit(ada, chat_id, 2, "m2, edited")
    api.react(bob, chat_id, 3, "👍")
    api.edit(ada, chat_id, 2, "m2, edited again")
    api.delete_message(ada, chat_id, 4)
    api.react(bob, chat_id, 4, "🎉", expect=409)  # a tombstone takes no reaction, and gets no rev
    api.react(bob, chat_id, 5, "🎉")
    api.react(bob, chat_id, 5, "🎉", on=False)

    feed = api.changes(bob, chat_id, after_rev=held)
    assert [m["seq"] for m in feed] == [3, 2, 4, 5]
    assert [m["rev"] for m in feed] == [held + 2, held + 3, held + 4, held + 6]
    three, two, four, five = feed
    assert three["reactions"] == [{"emoji": "👍", "user_ids": [bob.id]}]
    assert (two["text"], two["edited_at"] is not None) == ("m2, edited again", True)
    assert (four["deleted"], four["text"], four["seq"]) == (True, "", 4)  # a tombstone stays in the feed
    assert five["reactions"] == []
    # Each entry is the message as history shows it now.
    history = {m["seq"]: m for m in api.history(bob, chat_id)}
    assert all(message == history[message["seq"]] for message in feed)
    # Paging one at a time walks the same list.
    paged, rev = [], held
    while page := api.changes(bob, chat_id, after_rev=rev, limit=1):
        paged += page
        rev = page[-1]["rev"]
    assert paged == feed


def test_a_removed_member_reads_none_of_the_changes_made_after_the_removal(
    api: Api, make_account: Any
) -> None:
    owner, member = make_account("Owner"), make_account("Member")
    chat_id = api.group(owner, "Team", [member])["id"]
    api.send(owner, chat_id, "hello")
    api.remove_member(owner, chat_id, member)
    api.edit(owner, chat_id, 1, "hello, edited")
    api.react(owner, chat_id, 1, "👍")
    api.delete_message(owner, chat_id, 1)
    assert api.changes(member, chat_id, expect=404)["status_code"] == 404
    assert [m["deleted"] for m in api.changes(owner, chat_id)] == [True]
