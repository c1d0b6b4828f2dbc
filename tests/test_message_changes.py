"""Edits, deletes and reactions over REST, on both databases: who may, what is stored, what a rev is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api import Account, Api
from tests.conftest import fetch, make_settings
from windi_chat.app import create_app

Chat = tuple[Api, Account, Account, int]


@pytest.fixture
def chat(api: Api) -> Chat:
    """Ada and Bob's private chat with one message of Ada's (seq 1)."""
    ada, bob = api.account("Ada"), api.account("Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "Hello Bob")
    return api, ada, bob, chat_id


@pytest.fixture
def app_with(database_url: str) -> Iterator[Callable[..., Api]]:
    """An in-process app with settings of the test's own (limits set small), as a REST driver."""
    with ExitStack() as apps:

        def start(**settings: Any) -> Api:
            return Api(
                apps.enter_context(TestClient(app=create_app(make_settings(database_url, **settings))))
            )

        yield start


def last_rev(database_url: str, chat_id: int) -> int:
    return int(fetch(database_url, "SELECT last_rev FROM chats WHERE id = :c", c=chat_id)[0].last_rev)


def message(api: Api, account: Account, chat_id: int, seq: int) -> dict[str, Any]:
    return next(m for m in api.history(account, chat_id) if m["seq"] == seq)


# Edit ---------------------------------------------------------------------------------------------


def test_the_sender_edits_a_message_and_gets_it_back_updated(chat: Chat) -> None:
    api, ada, bob, chat_id = chat
    before = message(api, bob, chat_id, 1)

    edited = api.edit(ada, chat_id, 1, "  Hello Bob, again  ")

    assert edited["text"] == "Hello Bob, again"
    assert edited["edited_at"] is not None
    assert edited["rev"] > before["rev"]
    assert {k: v for k, v in edited.items() if k not in ("text", "edited_at", "rev")} == {
        k: v for k, v in before.items() if k not in ("text", "edited_at", "rev")
    }
    assert message(api, bob, chat_id, 1) == edited


def test_each_change_takes_the_chats_next_rev(chat: Chat, database_url: str) -> None:
    api, ada, bob, chat_id = chat
    start = last_rev(database_url, chat_id)

    assert api.edit(ada, chat_id, 1, "one")["rev"] == start + 1
    api.react(bob, chat_id, 1, "👍")
    assert message(api, ada, chat_id, 1)["rev"] == start + 2
    api.react(bob, chat_id, 1, "👍", on=False)
    assert message(api, ada, chat_id, 1)["rev"] == start + 3
    api.delete_message(ada, chat_id, 1)
    assert message(api, ada, chat_id, 1)["rev"] == start + 4
    assert last_rev(database_url, chat_id) == start + 4
    assert api.send(bob, chat_id, "after")["rev"] == start + 5


def test_another_member_may_not_edit_a_message(chat: Chat) -> None:
    api, _ada, bob, chat_id = chat

    assert api.edit(bob, chat_id, 1, "mine now", expect=403)["detail"] == "Only the sender may edit a message"
    assert message(api, bob, chat_id, 1)["text"] == "Hello Bob"


def test_a_non_member_gets_404_for_edit_delete_and_react(chat: Chat) -> None:
    api, _ada, _bob, chat_id = chat
    eve = api.account("Eve")

    assert api.edit(eve, chat_id, 1, "x", expect=404)["detail"] == "Chat not found"
    assert api.delete_message(eve, chat_id, 1, expect=404)["detail"] == "Chat not found"
    assert api.react(eve, chat_id, 1, "👍", expect=404)["detail"] == "Chat not found"
    assert api.react(eve, chat_id, 1, "👍", on=False, expect=404)["detail"] == "Chat not found"


@pytest.mark.parametrize("seq", [2, 0, 2**63, 2**64])
def test_an_unknown_seq_is_404(chat: Chat, seq: int) -> None:
    api, ada, _bob, chat_id = chat

    api.edit(ada, chat_id, seq, "x", expect=404)
    api.delete_message(ada, chat_id, seq, expect=404)
    api.react(ada, chat_id, seq, "👍", expect=404)


def test_edits_follow_the_text_rules_of_sending(chat: Chat) -> None:
    api, ada, bob, chat_id = chat

    for text in ("", "   ", "\u200b", "a\x00b", "x" * 4097):
        api.edit(ada, chat_id, 1, text, expect=400)
    assert api.edit(ada, chat_id, 1, "x" * 4096)["text"] == "x" * 4096
    response = api.call(
        "PATCH", f"/chats/{chat_id}/messages/1", ada, json={"text": "x", "extra": 1}, expect=None
    )
    assert response.status_code == 400
    assert message(api, bob, chat_id, 1)["text"] == "x" * 4096


def test_the_same_text_again_changes_nothing(chat: Chat, database_url: str) -> None:
    api, ada, _bob, chat_id = chat
    edited = api.edit(ada, chat_id, 1, "Fixed")
    rev = last_rev(database_url, chat_id)

    assert api.edit(ada, chat_id, 1, " Fixed ") == edited
    assert last_rev(database_url, chat_id) == rev


def test_a_deleted_message_cannot_be_edited(chat: Chat) -> None:
    api, ada, _bob, chat_id = chat
    api.delete_message(ada, chat_id, 1)

    assert api.edit(ada, chat_id, 1, "back", expect=409)["detail"] == "The message was deleted"


def test_edits_and_reactions_do_not_make_a_chat_unread(chat: Chat) -> None:
    api, ada, bob, chat_id = chat
    api.read(bob, chat_id, 1)

    api.edit(ada, chat_id, 1, "Hello Bob!")
    api.react(ada, chat_id, 1, "👍")
    api.delete_message(ada, chat_id, 1)

    assert api.chat(bob, chat_id)["unread_count"] == 0


# Delete -------------------------------------------------------------------------------------------


def test_the_sender_deletes_a_message_and_its_text_is_gone_from_the_database(
    chat: Chat, database_url: str
) -> None:
    api, ada, bob, chat_id = chat
    api.react(bob, chat_id, 1, "👍")
    reply = api.call(
        "POST",
        f"/chats/{chat_id}/messages",
        bob,
        json={"text": "Hi", "client_id": "r", "reply_to": 1},
        expect=201,
    )

    api.delete_message(ada, chat_id, 1)

    tombstone = message(api, bob, chat_id, 1)
    assert tombstone["deleted"] is True
    assert tombstone["text"] == ""
    assert tombstone["reactions"] == []
    assert tombstone["seq"] == 1
    [row] = fetch(
        database_url, "SELECT text, deleted FROM messages WHERE chat_id = :c AND seq = 1", c=chat_id
    )
    assert (row.text, bool(row.deleted)) == ("", True)
    assert fetch(database_url, "SELECT * FROM message_reactions WHERE chat_id = :c", c=chat_id) == []
    assert message(api, bob, chat_id, reply["seq"])["reply_to"] == 1


def test_deleting_twice_is_fine_and_changes_nothing_more(chat: Chat, database_url: str) -> None:
    api, ada, _bob, chat_id = chat
    api.delete_message(ada, chat_id, 1)
    rev = last_rev(database_url, chat_id)

    api.delete_message(ada, chat_id, 1)

    assert last_rev(database_url, chat_id) == rev


def test_the_other_member_of_a_private_chat_may_not_delete(chat: Chat) -> None:
    api, _ada, bob, chat_id = chat

    assert api.delete_message(bob, chat_id, 1, expect=403)["status_code"] == 403
    assert message(api, bob, chat_id, 1)["deleted"] is False


def test_a_groups_owner_may_delete_any_message_and_a_member_only_their_own(api: Api) -> None:
    ada, bob, cy = api.account("Ada"), api.account("Bob"), api.account("Cy")
    chat_id = api.group(ada, "Team", [bob, cy])["id"]
    api.send(bob, chat_id, "from Bob")
    api.send(cy, chat_id, "from Cy")

    api.delete_message(cy, chat_id, 1, expect=403)
    api.delete_message(ada, chat_id, 1)
    api.delete_message(cy, chat_id, 2)

    assert [m["deleted"] for m in api.history(bob, chat_id)] == [True, True]


# Reactions ----------------------------------------------------------------------------------------


def test_reactions_are_listed_by_first_use_with_their_people(chat: Chat) -> None:
    api, ada, bob, chat_id = chat

    api.react(bob, chat_id, 1, "👍")
    api.react(ada, chat_id, 1, "🎉")
    api.react(ada, chat_id, 1, "👍")

    assert message(api, ada, chat_id, 1)["reactions"] == [
        {"emoji": "👍", "user_ids": [bob.id, ada.id]},
        {"emoji": "🎉", "user_ids": [ada.id]},
    ]


def test_adding_and_taking_back_a_reaction_are_idempotent(chat: Chat, database_url: str) -> None:
    api, ada, bob, chat_id = chat
    api.react(bob, chat_id, 1, "👍")
    rev = last_rev(database_url, chat_id)

    api.react(bob, chat_id, 1, "👍")
    assert last_rev(database_url, chat_id) == rev
    api.react(bob, chat_id, 1, "👍", on=False)
    api.react(bob, chat_id, 1, "👍", on=False)
    api.react(bob, chat_id, 1, "🎉", on=False)

    assert last_rev(database_url, chat_id) == rev + 1
    assert message(api, ada, chat_id, 1)["reactions"] == []


@pytest.mark.parametrize(
    "emoji",
    [
        "a b",
        "a\tb",
        "\u3000",
        "a\x01",
        "\x7f",
        "😀" * 8 + "a",
        "é" * 17,
        "\u200b",
        "a\u202eb",
        "\ufeff",
        "\ufffd",
    ],
)
def test_an_emoji_with_whitespace_or_controls_or_over_32_bytes_is_400(chat: Chat, emoji: str) -> None:
    api, ada, _bob, chat_id = chat

    api.react(ada, chat_id, 1, emoji, expect=400)
    api.react(ada, chat_id, 1, emoji, on=False, expect=400)


@pytest.mark.parametrize("encoded", ["%FF", "%C0%AF", "%ED%A0%80"])
def test_an_emoji_path_of_bytes_that_are_not_utf8_is_400(chat: Chat, encoded: str) -> None:
    api, ada, _bob, chat_id = chat
    for method in ("PUT", "DELETE"):
        api.call(method, f"/chats/{chat_id}/messages/1/reactions/{encoded}", ada, expect=400)
    assert message(api, ada, chat_id, 1)["reactions"] == []


def test_an_emoji_of_32_bytes_and_sequences_of_several_code_points_are_taken(chat: Chat) -> None:
    api, ada, _bob, chat_id = chat
    family = "👨\u200d👩\u200d👧\u200d👦"  # one glyph of seven code points, 25 bytes
    wales = "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f"  # a flag built of tags
    for emoji in ("😀" * 8, family, "🇺🇦", "+1", wales):
        api.react(ada, chat_id, 1, emoji)

    kept = [r["emoji"] for r in message(api, ada, chat_id, 1)["reactions"]]
    assert kept == ["😀" * 8, family, "🇺🇦", "+1", wales]


def test_a_new_emoji_past_the_limit_is_409_but_more_people_may_choose_one_there(
    app_with: Callable[..., Api],
) -> None:
    api = app_with(max_reactions_per_message=2)
    ada, bob = api.account("Ada"), api.account("Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "React!")
    api.react(ada, chat_id, 1, "👍")
    api.react(ada, chat_id, 1, "🎉")

    assert api.react(bob, chat_id, 1, "🔥", expect=409)["status_code"] == 409
    api.react(bob, chat_id, 1, "🎉")
    api.react(ada, chat_id, 1, "👍", on=False)
    api.react(bob, chat_id, 1, "🔥")

    assert [r["emoji"] for r in message(api, ada, chat_id, 1)["reactions"]] == ["🎉", "🔥"]


def test_reacting_to_a_deleted_message_is_409(chat: Chat) -> None:
    api, ada, bob, chat_id = chat
    api.delete_message(ada, chat_id, 1)

    api.react(bob, chat_id, 1, "👍", expect=409)
    api.react(bob, chat_id, 1, "👍", on=False)  # nothing to take back: 204


# Limits and repeats -------------------------------------------------------------------------------


def test_edits_deletes_and_reactions_count_against_the_send_rate(app_with: Callable[..., Api]) -> None:
    api = app_with(send_rate=0.001, send_burst=4)
    ada, bob = api.account("Ada"), api.account("Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    api.send(ada, chat_id, "one")
    api.edit(ada, chat_id, 1, "two")
    api.react(ada, chat_id, 1, "👍")
    api.react(ada, chat_id, 1, "👍", on=False)

    response = api.call("PATCH", f"/chats/{chat_id}/messages/1", ada, json={"text": "three"}, expect=None)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    api.delete_message(ada, chat_id, 1, expect=429)
    api.react(ada, chat_id, 1, "👍", expect=429)
    api.send(ada, chat_id, "four", expect=429)
    assert message(api, bob, chat_id, 1)["text"] == "two"


def test_a_repeated_send_answers_with_the_message_as_it_now_is(chat: Chat) -> None:
    api, ada, bob, chat_id = chat
    sent = api.send(ada, chat_id, "Original", "repeat-me")
    api.edit(ada, chat_id, sent["seq"], "Edited")
    api.react(bob, chat_id, sent["seq"], "👍")

    again = api.send(ada, chat_id, "Original", "repeat-me", expect=200)

    assert again == message(api, ada, chat_id, sent["seq"])
    assert again["text"] == "Edited"
    assert again["reactions"] == [{"emoji": "👍", "user_ids": [bob.id]}]


def test_the_routes_describe_themselves_in_openapi(client: TestClient[Any]) -> None:
    paths = client.get("/docs/openapi.json").json()["paths"]
    message_path = paths["/chats/{chat_id}/messages/{seq}"]
    reaction_path = paths["/chats/{chat_id}/messages/{seq}/reactions/{emoji}"]

    assert message_path["patch"]["operationId"] == "editMessage"
    assert set(message_path["patch"]["responses"]) >= {"200", "400", "403", "404", "409", "429"}
    assert message_path["delete"]["operationId"] == "deleteMessage"
    assert set(message_path["delete"]["responses"]) >= {"204", "403", "404", "429"}
    assert reaction_path["put"]["operationId"] == "addReaction"
    assert set(reaction_path["put"]["responses"]) >= {"204", "400", "404", "409", "429"}
    assert reaction_path["delete"]["operationId"] == "removeReaction"


def test_search_finds_an_edited_message_by_its_new_text_and_a_deleted_one_not_at_all(chat: Chat) -> None:
    api, ada, bob, chat_id = chat
    api.send(ada, chat_id, "walrus sighting")

    api.edit(ada, chat_id, 1, "Hello penguin")
    api.delete_message(ada, chat_id, 2)

    def found(words: str) -> list[int]:
        return [m["seq"] for m in api.call("GET", "/search", bob, params={"q": words}, expect=200)]

    assert found("penguin") == [1]
    assert found("Bob") == []
    assert found("walrus") == []
