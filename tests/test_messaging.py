"""Messages over REST: sending, idempotency, read markers and history, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api import Account, Api
from tests.conftest import fetch, insert_messages


@pytest.fixture
def pair(api: Api, make_account: Any) -> tuple[Account, Account, int]:
    """Ada and Bob, and their private chat."""
    ada, bob = make_account("Ada"), make_account("Bob")
    return ada, bob, api.private_chat(ada, bob)["id"]


# Sending ------------------------------------------------------------------------------------------


def test_sent_message_is_stored_with_the_next_seq(api: Api, pair: Any, database_url: str) -> None:
    ada, _bob, chat_id = pair
    message = api.send(ada, chat_id, "  hello  ", "c-1", expect=201)
    assert set(message) == {"id", "chat_id", "seq", "sender_id", "text", "timestamp", "client_id", "read"} | {
        "rev",
        "reply_to",
        "edited_at",
        "deleted",
        "reactions",
    }
    assert (message["chat_id"], message["seq"], message["sender_id"]) == (chat_id, 1, ada.id)
    assert message["text"] == "hello"  # trimmed
    assert message["client_id"] == "c-1"
    assert message["read"] is False
    assert message["timestamp"].endswith(("Z", "+00:00"))
    assert api.send(ada, chat_id, "again", "c-2")["seq"] == 2
    assert fetch(database_url, "SELECT text FROM messages ORDER BY seq") == [("hello",), ("again",)]


def test_repeated_client_id_returns_the_original_and_stores_nothing(
    api: Api, pair: Any, database_url: str
) -> None:
    ada, bob, chat_id = pair
    first = api.send(ada, chat_id, "hello", "same")
    repeat = api.send(ada, chat_id, "a different text", "same", expect=200)
    assert repeat["id"] == first["id"]
    assert repeat["text"] == "hello"
    # The same client id from another sender is another message.
    api.send(bob, chat_id, "hi", "same", expect=201)
    assert api.send(ada, chat_id, "next", "other")["seq"] == 3  # no gap left by the repeat
    assert fetch(database_url, "SELECT count(*) FROM messages")[0][0] == 3


def test_parallel_repeats_of_one_client_id_store_one_row(api: Api, pair: Any, database_url: str) -> None:
    ada, _bob, chat_id = pair
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(
            pool.map(lambda _: api.send(ada, chat_id, "once", "retry-me", expect=None), range(12))
        )
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert fetch(database_url, "SELECT count(*), max(seq) FROM messages")[0] == (1, 1)


def test_concurrent_senders_get_gap_free_seqs(api: Api, make_account: Any, database_url: str) -> None:
    people = [make_account(f"Sender {i}") for i in range(3)]
    chat = api.group(people[0], "Busy", people[1:])

    def burst(person: Account) -> list[int]:
        return [api.send(person, chat["id"], f"{person.name} {i}", f"m{i}")["seq"] for i in range(15)]

    with ThreadPoolExecutor(max_workers=3) as pool:
        seqs_by_sender = list(pool.map(burst, people))
    for seqs in seqs_by_sender:
        assert seqs == sorted(seqs)  # one sender's messages keep their order
    assert sorted(s for seqs in seqs_by_sender for s in seqs) == list(range(1, 46))
    assert [row[0] for row in fetch(database_url, "SELECT seq FROM messages ORDER BY seq")] == list(
        range(1, 46)
    )


@pytest.mark.parametrize(
    "body",
    [
        {"text": "", "client_id": "a"},
        {"text": "   \n\t ", "client_id": "a"},
        {"text": "x" * 4097, "client_id": "a"},
        {"text": "fine", "client_id": ""},
        {"text": "fine", "client_id": "x" * 65},
        {"text": "fine"},
        {"client_id": "a"},
        {"text": 5, "client_id": "a"},
        {"text": "a\u0000b", "client_id": "a"},
        {"text": "fine", "client_id": "a\u0000"},
    ],
)
def test_invalid_messages_are_refused(api: Api, pair: Any, body: dict[str, Any]) -> None:
    ada, _bob, chat_id = pair
    assert api.call("POST", f"/chats/{chat_id}/messages", ada, json=body, expect=400)["detail"]


def test_text_of_4096_characters_after_trimming_is_accepted(api: Api, pair: Any) -> None:
    ada, _bob, chat_id = pair
    message = api.send(ada, chat_id, "  " + "y" * 4096 + "  ", "long", expect=201)
    assert len(message["text"]) == 4096


def test_sending_to_a_chat_you_are_not_in_is_not_found(
    api: Api, pair: Any, make_account: Any, database_url: str
) -> None:
    _ada, _bob, chat_id = pair
    eve = make_account("Eve")
    api.send(eve, chat_id, "let me in", "e1", expect=404)
    api.send(eve, 987_654, "anyone?", "e2", expect=404)
    assert fetch(database_url, "SELECT last_seq FROM chats WHERE id = :c", c=chat_id)[0][0] == 0


# Read markers -------------------------------------------------------------------------------------


def test_reading_moves_the_marker_and_marks_messages_read(api: Api, pair: Any) -> None:
    ada, bob, chat_id = pair
    for i in range(3):
        api.send(ada, chat_id, f"m{i}", f"c{i}")
    assert api.chat(bob, chat_id)["unread_count"] == 3

    assert api.read(bob, chat_id, 2, expect=200) == {"seq": 2, "all_read_seq": 2}
    assert [m["read"] for m in api.history(ada, chat_id)] == [True, True, False]
    assert api.chat(bob, chat_id)["unread_count"] == 1


def test_marker_never_moves_back_and_stops_at_the_last_message(api: Api, pair: Any) -> None:
    ada, bob, chat_id = pair
    for i in range(3):
        api.send(ada, chat_id, f"m{i}", f"c{i}")
    assert api.read(bob, chat_id, 99) == {"seq": 3, "all_read_seq": 3}
    assert api.read(bob, chat_id, 1) == {"seq": 3, "all_read_seq": 3}
    assert api.read(bob, chat_id, 0)["seq"] == 3


def test_sending_marks_your_own_message_read_for_you(api: Api, pair: Any) -> None:
    ada, bob, chat_id = pair
    api.send(bob, chat_id, "from bob", "b1")
    api.send(ada, chat_id, "from ada", "a1")
    assert api.chat(ada, chat_id)["unread_count"] == 0
    assert api.read(ada, chat_id, 0) == {"seq": 2, "all_read_seq": 1}


def test_group_message_is_read_when_the_last_member_reads_it(api: Api, make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    chat_id = api.group(ada, "G", [bob, cy])["id"]
    api.send(ada, chat_id, "news", "n1")
    assert api.read(bob, chat_id, 1) == {"seq": 1, "all_read_seq": 0}
    assert api.history(ada, chat_id)[0]["read"] is False
    assert api.read(cy, chat_id, 1) == {"seq": 1, "all_read_seq": 1}
    assert api.history(ada, chat_id)[0]["read"] is True


def test_member_added_later_starts_with_everything_read(api: Api, make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    chat_id = api.group(ada, "G", [bob])["id"]
    api.send(ada, chat_id, "before cy", "n1")
    api.add_member(ada, chat_id, cy)
    assert api.chat(cy, chat_id)["unread_count"] == 0
    assert api.history(cy, chat_id)[0]["text"] == "before cy"  # the whole history
    assert api.history(ada, chat_id)[0]["read"] is False  # Bob has not read it


def test_read_in_a_chat_you_are_not_in_is_not_found(api: Api, pair: Any, make_account: Any) -> None:
    _ada, _bob, chat_id = pair
    eve = make_account("Eve")
    api.read(eve, chat_id, 1, expect=404)


@pytest.mark.parametrize("body", [{"seq": -1}, {"seq": "one"}, {}, {"seq": 1.5}, [1]])
def test_invalid_read_requests_are_refused(api: Api, pair: Any, body: Any) -> None:
    _ada, bob, chat_id = pair
    api.call("POST", f"/chats/{chat_id}/read", bob, json=body, expect=400)


# History ------------------------------------------------------------------------------------------


@pytest.fixture
def long_chat(pair: Any, database_url: str) -> tuple[Account, int]:
    """Ada's chat with Bob, who has sent 30 messages (seqs 1 to 30)."""
    ada, bob, chat_id = pair
    insert_messages(database_url, chat_id, bob.id, [f"m{i}" for i in range(1, 31)])
    return ada, chat_id


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


def test_history_pages_by_offset_in_ascending_order(api: Api, long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert seqs(api.history(ada, chat_id)) == list(range(1, 31))
    assert seqs(api.history(ada, chat_id, limit=10)) == list(range(1, 11))
    assert seqs(api.history(ada, chat_id, limit=10, offset=25)) == list(range(26, 31))
    assert seqs(api.history(ada, chat_id, offset=30)) == []


def test_history_after_seq_gives_the_messages_after_it(api: Api, long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert seqs(api.history(ada, chat_id, after_seq=25)) == [26, 27, 28, 29, 30]
    assert seqs(api.history(ada, chat_id, after_seq=0, limit=3)) == [1, 2, 3]
    assert seqs(api.history(ada, chat_id, after_seq=30)) == []


def test_history_before_seq_gives_the_page_just_before_it(api: Api, long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert seqs(api.history(ada, chat_id, before_seq=11, limit=5)) == [6, 7, 8, 9, 10]
    assert seqs(api.history(ada, chat_id, before_seq=3, limit=5)) == [1, 2]
    assert seqs(api.history(ada, chat_id, before_seq=1)) == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "x"},
        {"offset": -1},
        {"after_seq": -1},
        {"after_seq": 1, "before_seq": 5},
        {"offset": 2, "after_seq": 1},
    ],
)
def test_bad_history_parameters_are_refused(api: Api, long_chat: Any, params: Any) -> None:
    ada, chat_id = long_chat
    assert api.history(ada, chat_id, expect=400, **params)["detail"]


def test_history_limit_of_200_is_allowed(api: Api, long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert len(seqs(api.history(ada, chat_id, limit=200))) == 30


def test_history_of_others_and_of_missing_chats_is_not_found(
    api: Api, long_chat: Any, make_account: Any
) -> None:
    _ada, chat_id = long_chat
    eve = make_account("Eve")
    foreign = api.history(eve, chat_id, expect=404)
    missing = api.history(eve, 999_999, expect=404)
    assert foreign == missing


def test_messaging_endpoints_are_documented(client: TestClient[Any]) -> None:
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert {"201", "200", "400", "404"} <= set(paths["/chats/{chat_id}/messages"]["post"]["responses"])
    assert {"200", "400", "404"} <= set(paths["/history/{chat_id}"]["get"]["responses"])
    assert {"200", "404"} <= set(paths["/chats/{chat_id}/read"]["post"]["responses"])
    parameters = {p["name"] for p in paths["/history/{chat_id}"]["get"]["parameters"]}
    assert {"limit", "offset", "after_seq", "before_seq"} <= parameters
