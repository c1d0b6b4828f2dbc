"""Chats, groups and membership over REST, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import event

from tests.conftest import Account, app_engine, fetch, insert_messages


def private(client: TestClient[Any], caller: Account, other: Account) -> Any:
    return client.post("/chats", json={"type": "private", "user_id": other.id}, headers=caller.headers)


def group(
    client: TestClient[Any], owner: Account, members: list[Account], name: str = "Team"
) -> dict[str, Any]:
    response = client.post(
        "/chats",
        json={"type": "group", "name": name, "member_ids": [m.id for m in members]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def add(client: TestClient[Any], caller: Account, chat_id: int, user_id: int) -> Any:
    return client.post(f"/groups/{chat_id}/add_user/{user_id}", headers=caller.headers)


def remove(client: TestClient[Any], caller: Account, chat_id: int, user_id: int) -> Any:
    return client.post(f"/groups/{chat_id}/remove_user/{user_id}", headers=caller.headers)


def roles(chat: dict[str, Any]) -> dict[int, str]:
    return {m["user_id"]: m["role"] for m in chat["members"]}


# Private chats ------------------------------------------------------------------------------------


def test_private_chat_is_created_with_both_members(client: TestClient[Any], make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    response = private(client, ada, bob)
    assert response.status_code == 201
    chat = response.json()
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
        "last_message",
        "unread_count",
    }
    assert set(chat["members"][0]) == {"user_id", "name", "role", "joined_at"}


def test_existing_private_chat_is_returned_whoever_asks(client: TestClient[Any], make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    first = private(client, ada, bob).json()
    again = private(client, ada, bob)
    reverse = private(client, bob, ada)
    assert again.status_code == 200
    assert reverse.status_code == 200
    assert again.json()["id"] == reverse.json()["id"] == first["id"]
    assert reverse.json()["name"] == "Ada"


def test_private_chat_with_yourself_is_refused(client: TestClient[Any], make_account: Any) -> None:
    ada = make_account("Ada")
    assert private(client, ada, ada).status_code == 400


def test_private_chat_with_unknown_user_is_not_found(client: TestClient[Any], make_account: Any) -> None:
    ada = make_account("Ada")
    response = client.post("/chats", json={"type": "private", "user_id": 999_999}, headers=ada.headers)
    assert response.status_code == 404


def test_concurrent_private_chat_creation_makes_one_chat(
    client: TestClient[Any], make_account: Any, database_url: str
) -> None:
    people = [make_account(f"Person {i}") for i in range(6)]
    pairs = [(a, b) for a in people for b in people if a.id != b.id]  # both directions of every pair

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda pair: private(client, *pair), pairs * 2))

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


def test_group_creator_becomes_owner_and_duplicates_count_once(
    client: TestClient[Any], make_account: Any
) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    response = client.post(
        "/chats",
        json={"type": "group", "name": "  Team  ", "member_ids": [bob.id, cy.id, bob.id, ada.id]},
        headers=ada.headers,
    )
    assert response.status_code == 201
    chat = response.json()
    assert chat["type"] == "group"
    assert chat["name"] == "Team"
    assert chat["creator_id"] == ada.id
    assert roles(chat) == {ada.id: "owner", bob.id: "member", cy.id: "member"}


def test_group_with_unknown_member_is_not_found(client: TestClient[Any], make_account: Any) -> None:
    ada = make_account("Ada")
    response = client.post(
        "/chats", json={"type": "group", "name": "Team", "member_ids": [424_242]}, headers=ada.headers
    )
    assert response.status_code == 404
    assert client.get("/chats", headers=ada.headers).json() == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_group_name_must_be_1_to_100_characters(
    client: TestClient[Any], make_account: Any, name: str
) -> None:
    ada = make_account("Ada")
    response = client.post("/chats", json={"type": "group", "name": name}, headers=ada.headers)
    assert response.status_code == 400


@pytest.mark.parametrize(
    "body",
    [{"type": "channel"}, {"type": "private"}, {"type": "private", "user_id": "x"}, {"user_id": 1}, []],
)
def test_malformed_chat_requests_are_refused(client: TestClient[Any], make_account: Any, body: Any) -> None:
    ada = make_account("Ada")
    assert client.post("/chats", json=body, headers=ada.headers).status_code == 400


def test_group_of_one_is_allowed(client: TestClient[Any], make_account: Any) -> None:
    ada = make_account("Ada")
    chat = group(client, ada, [], name="Notes")
    assert roles(chat) == {ada.id: "owner"}


# Reading chats ------------------------------------------------------------------------------------


def test_chat_of_others_and_missing_chat_give_the_same_404(
    client: TestClient[Any], make_account: Any
) -> None:
    ada, bob, eve = make_account("Ada"), make_account("Bob"), make_account("Eve")
    chat = private(client, ada, bob).json()
    assert client.get(f"/chats/{chat['id']}", headers=ada.headers).status_code == 200
    foreign = client.get(f"/chats/{chat['id']}", headers=eve.headers)
    missing = client.get("/chats/987654", headers=eve.headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_inbox_lists_most_recent_activity_first_with_unread_counts(
    client: TestClient[Any], make_account: Any, database_url: str
) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    with_bob = private(client, ada, bob).json()
    with_cy = private(client, ada, cy).json()
    team = group(client, ada, [bob, cy])
    insert_messages(database_url, with_bob["id"], bob.id, ["hi", "are you there?"])
    insert_messages(database_url, team["id"], cy.id, ["standup?"])

    inbox = client.get("/chats", headers=ada.headers).json()
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
    assert client.get("/chats", headers=ada.headers).json()[0]["id"] == with_cy["id"]
    # Bob's inbox is his own view: his unread count in the group, not Ada's.
    bob_inbox = {c["id"]: c for c in client.get("/chats", headers=bob.headers).json()}
    assert set(bob_inbox) == {with_bob["id"], team["id"]}
    assert bob_inbox[team["id"]]["unread_count"] == 1


def test_inbox_needs_the_same_queries_for_one_chat_or_many(
    client: TestClient[Any], make_account: Any
) -> None:
    ada = make_account("Ada")
    others = [make_account(f"Friend {i}") for i in range(8)]
    engine = app_engine(client.app).sync_engine
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    private(client, ada, others[0])
    event.listen(engine, "before_cursor_execute", count)
    try:
        client.get("/chats", headers=ada.headers)
        one_chat = len(statements)
        for other in others[1:]:
            private(client, ada, other)
        group(client, ada, others)
        statements.clear()
        inbox = client.get("/chats", headers=ada.headers).json()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(inbox) == 9
    assert len(statements) == one_chat
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 2


# Membership -----------------------------------------------------------------------------------------


def test_owner_adds_a_member_who_starts_with_nothing_unread(
    client: TestClient[Any], make_account: Any, database_url: str
) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    team = group(client, ada, [bob])
    insert_messages(database_url, team["id"], bob.id, ["one", "two", "three"])

    response = add(client, ada, team["id"], cy.id)
    assert response.status_code == 200
    assert roles(response.json()) == {ada.id: "owner", bob.id: "member", cy.id: "member"}
    seen_by_cy = client.get(f"/chats/{team['id']}", headers=cy.headers).json()
    assert seen_by_cy["unread_count"] == 0
    assert seen_by_cy["last_message"]["text"] == "three"  # the whole history is visible
    assert fetch(database_url, "SELECT read_seq FROM chat_members WHERE user_id = :u", u=cy.id)[0][0] == 3


def test_adding_someone_already_in_is_a_conflict(client: TestClient[Any], make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    team = group(client, ada, [bob])
    assert add(client, ada, team["id"], bob.id).status_code == 409
    assert add(client, ada, team["id"], ada.id).status_code == 409


def test_adding_unknown_user_is_not_found(client: TestClient[Any], make_account: Any) -> None:
    ada = make_account("Ada")
    team = group(client, ada, [])
    assert add(client, ada, team["id"], 555_555).status_code == 404


def test_member_who_is_not_owner_cannot_manage_others(client: TestClient[Any], make_account: Any) -> None:
    ada, bob, cy, dan = make_account("Ada"), make_account("Bob"), make_account("Cy"), make_account("Dan")
    team = group(client, ada, [bob, cy])
    assert add(client, bob, team["id"], dan.id).status_code == 403
    assert remove(client, bob, team["id"], cy.id).status_code == 403
    assert remove(client, bob, team["id"], ada.id).status_code == 403
    assert len(client.get(f"/chats/{team['id']}", headers=ada.headers).json()["members"]) == 3


def test_outsider_and_private_chats_get_404_on_group_endpoints(
    client: TestClient[Any], make_account: Any
) -> None:
    ada, bob, eve = make_account("Ada"), make_account("Bob"), make_account("Eve")
    team = group(client, ada, [bob])
    direct = private(client, ada, bob).json()
    assert add(client, eve, team["id"], eve.id).status_code == 404
    assert remove(client, eve, team["id"], bob.id).status_code == 404
    assert add(client, ada, direct["id"], eve.id).status_code == 404
    assert remove(client, ada, direct["id"], bob.id).status_code == 404
    assert add(client, ada, 999_999, eve.id).status_code == 404


def test_owner_removes_a_member(client: TestClient[Any], make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    team = group(client, ada, [bob, cy])
    response = remove(client, ada, team["id"], bob.id)
    assert response.status_code == 200
    assert roles(response.json()) == {ada.id: "owner", cy.id: "member"}
    assert client.get(f"/chats/{team['id']}", headers=bob.headers).status_code == 404


def test_removing_someone_not_in_the_group_is_a_conflict(client: TestClient[Any], make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    team = group(client, ada, [bob])
    assert remove(client, ada, team["id"], cy.id).status_code == 409


def test_member_can_leave(client: TestClient[Any], make_account: Any) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    team = group(client, ada, [bob])
    response = remove(client, bob, team["id"], bob.id)
    assert response.status_code == 200
    assert roles(response.json()) == {ada.id: "owner"}
    assert [c["id"] for c in client.get("/chats", headers=bob.headers).json()] == []


def test_owner_leaving_hands_the_group_to_the_longest_standing_member(
    client: TestClient[Any], make_account: Any
) -> None:
    ada, bob, cy, dan = make_account("Ada"), make_account("Bob"), make_account("Cy"), make_account("Dan")
    team = group(client, ada, [bob])
    add(client, ada, team["id"], cy.id)
    add(client, ada, team["id"], dan.id)

    response = remove(client, ada, team["id"], ada.id)
    assert response.status_code == 200
    assert roles(response.json()) == {bob.id: "owner", cy.id: "member", dan.id: "member"}
    assert add(client, bob, team["id"], ada.id).status_code == 200
    assert remove(client, cy, team["id"], dan.id).status_code == 403


def test_last_member_leaving_keeps_the_empty_group_and_its_history(
    client: TestClient[Any], make_account: Any, database_url: str
) -> None:
    ada, bob = make_account("Ada"), make_account("Bob")
    team = group(client, ada, [bob])
    insert_messages(database_url, team["id"], bob.id, ["first", "second"])
    assert remove(client, bob, team["id"], bob.id).status_code == 200
    response = remove(client, ada, team["id"], ada.id)
    assert response.status_code == 200
    assert response.json()["members"] == []
    assert fetch(database_url, "SELECT count(*) FROM chats WHERE id = :c", c=team["id"])[0][0] == 1
    assert fetch(database_url, "SELECT count(*) FROM messages WHERE chat_id = :c", c=team["id"])[0][0] == 2


def test_chat_endpoints_need_a_token(client: TestClient[Any]) -> None:
    assert client.get("/chats").status_code == 401
    assert client.post("/chats", json={"type": "group", "name": "x"}).status_code == 401
    assert client.post("/groups/1/add_user/2").status_code == 401


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
