"""``DELETE /users/me``: the account goes, its messages stay for the others without a name."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api import PASSWORD, Api
from tests.conftest import fetch

DELETED = {"id": None, "name": "Deleted account"}


def test_a_wrong_password_is_403_and_the_account_stays(api: Api) -> None:
    (ada,) = api.people("Ada")
    api.delete_account(ada, "not the password", expect=403)
    assert api.me(ada)["id"] == ada.id


@pytest.mark.parametrize("body", [{}, {"password": 1}, {"password": PASSWORD, "extra": True}])
def test_a_malformed_body_is_400(api: Api, body: dict[str, Any]) -> None:
    (ada,) = api.people("Ada")
    response = api.call("DELETE", "/users/me", ada, json=body, expect=None)
    assert response.status_code == 400
    assert api.me(ada)["id"] == ada.id


def test_a_deleted_accounts_tokens_and_password_stop_working(api: Api) -> None:
    (ada,) = api.people("Ada")
    other_device = api.session_of(ada)
    api.delete_account(ada)
    api.me(ada, expect=401)
    api.me(other_device, expect=401)
    api.refresh(other_device.refresh_token, expect=401)
    api.login(ada.email, expect=401)


def test_the_email_is_free_for_a_new_registration(api: Api) -> None:
    (ada,) = api.people("Ada")
    api.delete_account(ada)
    again = api.register("Ada Again", ada.email)
    assert again["email"] == ada.email
    assert api.login(ada.email)["access_token"]


def test_messages_stay_with_the_sender_shown_as_deleted(api: Api) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "from ada")
    api.send(bob, chat_id, "from bob")
    api.delete_account(ada)
    first, second = api.history(bob, chat_id)
    assert first["text"] == "from ada"
    assert first["sender_id"] is None
    assert first["sender"] == DELETED
    assert second["sender_id"] == bob.id
    assert "sender" not in second
    (chat,) = api.chats(bob)
    assert [member["user_id"] for member in chat["members"]] == [bob.id]


def test_the_accounts_reactions_are_taken_back_as_changes_the_feed_shows(api: Api) -> None:
    """Also in a chat the person had left: everyone who follows the feed sees each reaction go."""
    ada, bob, cy = api.people("Ada", "Bob", "Cy")
    chat_id = api.private_chat(ada, bob)["id"]
    group_id = api.group(bob, "Left", [ada, cy])["id"]
    api.send(bob, chat_id, "one")
    api.send(bob, chat_id, "two")
    api.send(cy, group_id, "three")
    api.react(ada, chat_id, 1, "👍")
    api.react(bob, chat_id, 1, "👍")
    api.react(ada, chat_id, 2, "🎉")
    api.react(ada, group_id, 1, "🔥")
    api.remove_member(bob, group_id, ada)
    chat_rev = max(m["rev"] for m in api.changes(bob, chat_id))
    group_rev = max(m["rev"] for m in api.changes(cy, group_id))

    api.delete_account(ada)

    changed = api.changes(bob, chat_id, after_rev=chat_rev)
    assert [(m["seq"], m["reactions"]) for m in changed] == [
        (1, [{"emoji": "👍", "user_ids": [bob.id]}]),
        (2, []),
    ]
    assert [m["rev"] for m in changed] == [chat_rev + 1, chat_rev + 2]
    [taken] = api.changes(cy, group_id, after_rev=group_rev)
    assert (taken["seq"], taken["reactions"], taken["rev"]) == (1, [], group_rev + 1)


def test_a_group_owners_deletion_passes_ownership_as_when_the_owner_leaves(api: Api) -> None:
    ada, bob, cat = api.people("Ada", "Bob", "Cat")
    group_id = api.group(ada, "Team", [bob, cat])["id"]
    api.delete_account(ada)
    group = api.chat(bob, group_id)
    roles = {member["user_id"]: member["role"] for member in group["members"]}
    assert roles == {bob.id: "owner", cat.id: "member"}
    api.add_member(bob, group_id, api.people("Dan")[0])  # the new owner can act as one


def test_nothing_of_the_account_remains(api: Api, database_url: str) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "hello")
    api.delete_account(ada)
    assert (
        fetch(
            database_url, "SELECT id FROM users WHERE id = :id OR email = :email", id=ada.id, email=ada.email
        )
        == []
    )
    assert fetch(database_url, "SELECT id FROM sessions WHERE user_id = :id", id=ada.id) == []
    assert fetch(database_url, "SELECT chat_id FROM chat_members WHERE user_id = :id", id=ada.id) == []
    senders = fetch(database_url, "SELECT sender_id FROM messages WHERE chat_id = :id", id=chat_id)
    assert [row.sender_id for row in senders] == [None]


def test_deleting_an_account_twice_is_401_the_second_time(api: Api) -> None:
    (ada,) = api.people("Ada")
    api.delete_account(ada)
    api.delete_account(ada, expect=401)


def test_the_next_account_can_open_a_private_chat_with_the_same_person(api: Api) -> None:
    """On SQLite the new account may even get the deleted one's id: its chat must still be its own."""
    (bob,) = api.people("Bob")
    (ada,) = api.people("Ada")  # the newest account: SQLite hands its id out again once it is gone
    old_chat_id = api.private_chat(ada, bob)["id"]
    api.delete_account(ada)
    (newcomer,) = api.people("Newcomer")
    chat = api.private_chat(newcomer, bob)
    assert chat["id"] != old_chat_id
    assert {member["user_id"] for member in chat["members"]} == {newcomer.id, bob.id}
