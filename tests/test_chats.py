"""Chats, groups and membership over REST, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import event

from tests.api import Api
from tests.conftest import app_engine, fetch, insert_messages


def roles(chat: dict[str, Any]) -> dict[int, str]:
    return {m["user_id"]: m["role"] for m in chat["members"]}


# Private chats ------------------------------------------------------------------------------------


def test_private_chat_is_created_with_both_members(api: Api, make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    chat = api.private_chat(ada, bob, expect=201)
    assert chat["type"] == "private"
    assert chat["name"] == "Bob"  # the other person's name
    assert sorted(m["user_id"] for m in chat["members"]) == sorted([ada.id, bob.id])
    assert chat["creator_id"] == ada.id
    assert chat["last_message"] is None
    assert chat["unread_count"] == 0
    assert set(chat) == {
        "id",
        "type",
        "name",
        "created_at",
        "creator_id",
        "members",
        "member_count",
        "last_message",
        "unread_count",
    }
    assert set(chat["members"][0]) == {"user_id", "name", "role", "joined_at", "online", "last_seen"}


def test_existing_private_chat_is_returned_whoever_asks(api: Api, make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    first = api.private_chat(ada, bob)
    again = api.private_chat(ada, bob, expect=200)
    reverse = api.private_chat(bob, ada, expect=200)
    assert again["id"] == reverse["id"] == first["id"]
    assert reverse["name"] == "Ada"


def test_private_chat_with_yourself_is_refused(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    api.private_chat(ada, ada, expect=400)


def test_private_chat_with_unknown_user_is_not_found(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    api.private_chat(ada, 999_999, expect=404)


def test_concurrent_private_chat_creation_makes_one_chat(
    api: Api, make_account: Any, database_url: str
) -> None:
    people = [make_account(f"Person {i}") for i in range(6)]
    pairs = [(a, b) for a in people for b in people if a.id != b.id]  # both directions of every pair

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda pair: api.private_chat(*pair, expect=None), pairs * 2))

    assert all(r.status_code in (200, 201) for r in responses), [
        r.text for r in responses if r.status_code >= 300
    ]
    ids_by_pair: dict[frozenset[int], set[int]] = {}
    for (a, b), response in zip(pairs * 2, responses, strict=True):
        ids_by_pair.setdefault(frozenset((a.id, b.id)), set()).add(response.json()["id"])
    assert all(len(ids) == 1 for ids in ids_by_pair.values())
    assert sum(r.status_code == 201 for r in responses) == len(ids_by_pair) == 15
    stored = fetch(database_url, "SELECT count(*) FROM chats WHERE type = 'private'")[0][0]
    assert stored == 15


# Groups -------------------------------------------------------------------------------------------


def test_group_creator_becomes_owner_and_duplicates_count_once(api: Api, make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    chat = api.group(ada, "  Team  ", [bob, cy, bob, ada], expect=201)
    assert chat["type"] == "group"
    assert chat["name"] == "Team"
    assert chat["creator_id"] == ada.id
    assert roles(chat) == {ada.id: "owner", bob.id: "member", cy.id: "member"}


def test_group_with_unknown_member_is_not_found(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    api.group(ada, "Team", [424_242], expect=404)
    assert api.chats(ada) == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_group_name_must_be_1_to_100_characters(api: Api, make_account: Any, name: str) -> None:
    ada = make_account("Ada")
    api.call("POST", "/chats", ada, json={"type": "group", "name": name}, expect=400)


@pytest.mark.parametrize(
    "body",
    [{"type": "channel"}, {"type": "private"}, {"type": "private", "user_id": "x"}, {"user_id": 1}, []],
)
def test_malformed_chat_requests_are_refused(api: Api, make_account: Any, body: Any) -> None:
    ada = make_account("Ada")
    api.call("POST", "/chats", ada, json=body, expect=400)


def test_group_of_one_is_allowed(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Notes")
    assert roles(chat) == {ada.id: "owner"}


# Reading chats ------------------------------------------------------------------------------------


def test_chat_of_others_and_missing_chat_give_the_same_404(api: Api, make_account: Any) -> None:
    ada, bob, eve = make_account("Ada"), make_account("Bob"), make_account("Eve")
    chat = api.private_chat(ada, bob)
    api.chat(ada, chat["id"], expect=200)
    foreign = api.chat(eve, chat["id"], expect=404)
    missing = api.chat(eve, 987654, expect=404)
    assert foreign == missing


def test_inbox_lists_most_recent_activity_first_with_unread_counts(
    api: Api, make_account: Any, database_url: str
) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    with_bob = api.private_chat(ada, bob)
    with_cy = api.private_chat(ada, cy)
    team = api.group(ada, "Team", [bob, cy])
    insert_messages(database_url, with_bob["id"], bob.id, ["hi", "are you there?"])
    insert_messages(database_url, team["id"], cy.id, ["standup?"])

    inbox = api.chats(ada)
    assert [c["id"] for c in inbox] == [team["id"], with_bob["id"], with_cy["id"]]
    by_id = {c["id"]: c for c in inbox}
    assert by_id[with_bob["id"]]["unread_count"] == 2
    assert by_id[team["id"]]["unread_count"] == 1
    assert by_id[with_cy["id"]]["unread_count"] == 0
    last = by_id[with_bob["id"]]["last_message"]
    assert last["text"] == "are you there?"
    assert last["seq"] == 2
    assert last["sender_id"] == bob.id
    assert last["read"] is False
    assert by_id[with_cy["id"]]["last_message"] is None

    insert_messages(database_url, with_cy["id"], cy.id, ["new"])
    assert api.chats(ada)[0]["id"] == with_cy["id"]
    # Bob's inbox is his own view: his unread count in the group, not Ada's.
    bob_inbox = {c["id"]: c for c in api.chats(bob)}
    assert set(bob_inbox) == {with_bob["id"], team["id"]}
    assert bob_inbox[team["id"]]["unread_count"] == 1


def test_inbox_needs_the_same_queries_for_one_chat_or_many(
    client: TestClient[Any], api: Api, make_account: Any
) -> None:
    ada = make_account("Ada")
    others = [make_account(f"Friend {i}") for i in range(8)]
    engine = app_engine(client.app).sync_engine
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    api.private_chat(ada, others[0])
    event.listen(engine, "before_cursor_execute", count)
    try:
        api.chats(ada)
        one_chat = len(statements)
        for other in others[1:]:
            api.private_chat(ada, other)
        api.group(ada, "Team", others)
        statements.clear()
        inbox = api.chats(ada)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(inbox) == 9
    assert len(statements) == one_chat
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 2


# Membership -----------------------------------------------------------------------------------------


def test_owner_adds_a_member_who_starts_with_nothing_unread(
    api: Api, make_account: Any, database_url: str
) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    team = api.group(ada, "Team", [bob])
    insert_messages(database_url, team["id"], bob.id, ["one", "two", "three"])

    chat = api.add_member(ada, team["id"], cy, expect=200)
    assert roles(chat) == {ada.id: "owner", bob.id: "member", cy.id: "member"}
    seen_by_cy = api.chat(cy, team["id"])
    assert seen_by_cy["unread_count"] == 0
    assert seen_by_cy["last_message"]["text"] == "three"  # the whole history is visible
    assert fetch(database_url, "SELECT read_seq FROM chat_members WHERE user_id = :u", u=cy.id)[0][0] == 3


def test_adding_someone_already_in_is_a_conflict(api: Api, make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    team = api.group(ada, "Team", [bob])
    api.add_member(ada, team["id"], bob, expect=409)
    api.add_member(ada, team["id"], ada, expect=409)


def test_adding_unknown_user_is_not_found(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    team = api.group(ada, "Team")
    api.add_member(ada, team["id"], 555_555, expect=404)


def test_member_who_is_not_owner_cannot_manage_others(api: Api, make_account: Any) -> None:
    ada, bob, cy, dan = make_account("Ada"), make_account("Bob"), make_account("Cy"), make_account("Dan")
    team = api.group(ada, "Team", [bob, cy])
    api.add_member(bob, team["id"], dan, expect=403)
    api.remove_member(bob, team["id"], cy, expect=403)
    api.remove_member(bob, team["id"], ada, expect=403)
    assert len(api.chat(ada, team["id"])["members"]) == 3


def test_outsider_and_private_chats_get_404_on_group_endpoints(api: Api, make_account: Any) -> None:
    ada, bob, eve = make_account("Ada"), make_account("Bob"), make_account("Eve")
    team = api.group(ada, "Team", [bob])
    direct = api.private_chat(ada, bob)
    api.add_member(eve, team["id"], eve, expect=404)
    api.remove_member(eve, team["id"], bob, expect=404)
    api.add_member(ada, direct["id"], eve, expect=404)
    api.remove_member(ada, direct["id"], bob, expect=404)
    api.add_member(ada, 999_999, eve, expect=404)


def test_owner_removes_a_member(api: Api, make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    team = api.group(ada, "Team", [bob, cy])
    chat = api.remove_member(ada, team["id"], bob, expect=200)
    assert roles(chat) == {ada.id: "owner", cy.id: "member"}
    api.chat(bob, team["id"], expect=404)


def test_removing_someone_not_in_the_group_is_a_conflict(api: Api, make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    team = api.group(ada, "Team", [bob])
    api.remove_member(ada, team["id"], cy, expect=409)


def test_member_can_leave(api: Api, make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    team = api.group(ada, "Team", [bob])
    chat = api.remove_member(bob, team["id"], bob, expect=200)
    assert roles(chat) == {ada.id: "owner"}
    assert [c["id"] for c in api.chats(bob)] == []


def test_owner_leaving_hands_the_group_to_the_longest_standing_member(api: Api, make_account: Any) -> None:
    ada, bob, cy, dan = make_account("Ada"), make_account("Bob"), make_account("Cy"), make_account("Dan")
    team = api.group(ada, "Team", [bob])
    api.add_member(ada, team["id"], cy)
    api.add_member(ada, team["id"], dan)

    chat = api.remove_member(ada, team["id"], ada, expect=200)
    assert roles(chat) == {bob.id: "owner", cy.id: "member", dan.id: "member"}
    api.add_member(bob, team["id"], ada, expect=200)
    api.remove_member(cy, team["id"], dan, expect=403)


def test_last_member_leaving_keeps_the_empty_group_and_its_history(
    api: Api, make_account: Any, database_url: str
) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    team = api.group(ada, "Team", [bob])
    insert_messages(database_url, team["id"], bob.id, ["first", "second"])
    api.remove_member(bob, team["id"], bob, expect=200)
    chat = api.remove_member(ada, team["id"], ada, expect=200)
    assert chat["members"] == []
    assert fetch(database_url, "SELECT count(*) FROM chats WHERE id = :c", c=team["id"])[0][0] == 1
    assert fetch(database_url, "SELECT count(*) FROM messages WHERE chat_id = :c", c=team["id"])[0][0] == 2


def test_chat_endpoints_need_a_token(api: Api) -> None:
    api.call("GET", "/chats", expect=401)
    api.call("POST", "/chats", json={"type": "group", "name": "x"}, expect=401)
    api.call("POST", "/groups/1/add_user/2", expect=401)


def test_chat_endpoints_are_documented_with_their_error_codes(client: TestClient[Any]) -> None:
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert {"/chats", "/chats/{chat_id}", "/groups/{group_id}/add_user/{user_id}"} <= set(paths)
    assert {"201", "400", "404"} <= set(paths["/chats"]["post"]["responses"])
    assert {"200", "403", "404", "409"} <= set(
        paths["/groups/{group_id}/add_user/{user_id}"]["post"]["responses"]
    )
    assert {"200", "403", "404", "409"} <= set(
        paths["/groups/{group_id}/remove_user/{user_id}"]["post"]["responses"]
    )
    assert "404" in paths["/chats/{chat_id}"]["get"]["responses"]
