"""Messages over REST: sending, idempotency, read markers and history, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.conftest import Account, fetch, insert_messages


@pytest.fixture
def pair(client: TestClient[Any], make_account: Any) -> tuple[Account, Account, int]:
    ada, bob = make_account("Ada"), make_account("Bob")
    chat = client.post("/chats", json={"type": "private", "user_id": bob.id}, headers=ada.headers).json()
    return ada, bob, chat["id"]


def send(client: TestClient[Any], who: Account, chat_id: int, text: str, client_id: str) -> Any:
    return client.post(
        f"/chats/{chat_id}/messages", json={"text": text, "client_id": client_id}, headers=who.headers
    )


def read(client: TestClient[Any], who: Account, chat_id: int, seq: int) -> Any:
    return client.post(f"/chats/{chat_id}/read", json={"seq": seq}, headers=who.headers)


def page(client: TestClient[Any], who: Account, chat_id: int, **params: Any) -> Any:
    return client.get(f"/history/{chat_id}", params=params, headers=who.headers)


# Sending ------------------------------------------------------------------------------------------


def test_sent_message_is_stored_with_the_next_seq(
    client: TestClient[Any], pair: Any, database_url: str
) -> None:
    ada, _bob, chat_id = pair
    response = send(client, ada, chat_id, "  hello  ", "c-1")
    assert response.status_code == 201
    message = response.json()
    assert set(message) == {"id", "chat_id", "seq", "sender_id", "text", "timestamp", "client_id", "read"}
    assert (message["chat_id"], message["seq"], message["sender_id"]) == (chat_id, 1, ada.id)
    assert message["text"] == "hello"  # trimmed
    assert message["client_id"] == "c-1"
    assert message["read"] is False
    assert message["timestamp"].endswith(("Z", "+00:00"))
    assert send(client, ada, chat_id, "again", "c-2").json()["seq"] == 2
    assert fetch(database_url, "SELECT text FROM messages ORDER BY seq") == [("hello",), ("again",)]


def test_repeated_client_id_returns_the_original_and_stores_nothing(
    client: TestClient[Any], pair: Any, database_url: str
) -> None:
    ada, bob, chat_id = pair
    first = send(client, ada, chat_id, "hello", "same")
    repeat = send(client, ada, chat_id, "a different text", "same")
    assert repeat.status_code == 200
    assert repeat.json()["id"] == first.json()["id"]
    assert repeat.json()["text"] == "hello"
    # The same client id from another sender is another message.
    assert send(client, bob, chat_id, "hi", "same").status_code == 201
    assert send(client, ada, chat_id, "next", "other").json()["seq"] == 3  # no gap left by the repeat
    assert fetch(database_url, "SELECT count(*) FROM messages")[0][0] == 3


def test_parallel_repeats_of_one_client_id_store_one_row(
    client: TestClient[Any], pair: Any, database_url: str
) -> None:
    ada, _bob, chat_id = pair
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: send(client, ada, chat_id, "once", "retry-me"), range(12)))
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert fetch(database_url, "SELECT count(*), max(seq) FROM messages")[0] == (1, 1)


def test_concurrent_senders_get_gap_free_seqs(
    client: TestClient[Any], make_account: Any, database_url: str
) -> None:
    people = [make_account(f"Sender {i}") for i in range(3)]
    chat = client.post(
        "/chats",
        json={"type": "group", "name": "Busy", "member_ids": [p.id for p in people[1:]]},
        headers=people[0].headers,
    ).json()

    def burst(person: Account) -> list[int]:
        return [
            send(client, person, chat["id"], f"{person.name} {i}", f"m{i}").json()["seq"] for i in range(15)
        ]

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
    ],
)
def test_invalid_messages_are_refused(client: TestClient[Any], pair: Any, body: dict[str, Any]) -> None:
    ada, _bob, chat_id = pair
    response = client.post(f"/chats/{chat_id}/messages", json=body, headers=ada.headers)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_text_of_4096_characters_after_trimming_is_accepted(client: TestClient[Any], pair: Any) -> None:
    ada, _bob, chat_id = pair
    response = send(client, ada, chat_id, "  " + "y" * 4096 + "  ", "long")
    assert response.status_code == 201
    assert len(response.json()["text"]) == 4096


def test_sending_to_a_chat_you_are_not_in_is_not_found(
    client: TestClient[Any], pair: Any, make_account: Any, database_url: str
) -> None:
    _ada, _bob, chat_id = pair
    eve = make_account("Eve")
    assert send(client, eve, chat_id, "let me in", "e1").status_code == 404
    assert send(client, eve, 987_654, "anyone?", "e2").status_code == 404
    assert fetch(database_url, "SELECT last_seq FROM chats WHERE id = :c", c=chat_id)[0][0] == 0


# Read markers -------------------------------------------------------------------------------------


def test_reading_moves_the_marker_and_marks_messages_read(client: TestClient[Any], pair: Any) -> None:
    ada, bob, chat_id = pair
    for i in range(3):
        send(client, ada, chat_id, f"m{i}", f"c{i}")
    assert client.get(f"/chats/{chat_id}", headers=bob.headers).json()["unread_count"] == 3

    response = read(client, bob, chat_id, 2)
    assert response.status_code == 200
    assert response.json() == {"seq": 2, "all_read_seq": 2}
    assert [m["read"] for m in page(client, ada, chat_id).json()] == [True, True, False]
    assert client.get(f"/chats/{chat_id}", headers=bob.headers).json()["unread_count"] == 1


def test_marker_never_moves_back_and_stops_at_the_last_message(client: TestClient[Any], pair: Any) -> None:
    ada, bob, chat_id = pair
    for i in range(3):
        send(client, ada, chat_id, f"m{i}", f"c{i}")
    assert read(client, bob, chat_id, 99).json() == {"seq": 3, "all_read_seq": 3}
    assert read(client, bob, chat_id, 1).json() == {"seq": 3, "all_read_seq": 3}
    assert read(client, bob, chat_id, 0).json()["seq"] == 3


def test_sending_marks_your_own_message_read_for_you(client: TestClient[Any], pair: Any) -> None:
    ada, bob, chat_id = pair
    send(client, bob, chat_id, "from bob", "b1")
    send(client, ada, chat_id, "from ada", "a1")
    assert client.get(f"/chats/{chat_id}", headers=ada.headers).json()["unread_count"] == 0
    assert read(client, ada, chat_id, 0).json() == {"seq": 2, "all_read_seq": 1}


def test_group_message_is_read_when_the_last_member_reads_it(
    client: TestClient[Any], make_account: Any
) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    chat_id = client.post(
        "/chats", json={"type": "group", "name": "G", "member_ids": [bob.id, cy.id]}, headers=ada.headers
    ).json()["id"]
    send(client, ada, chat_id, "news", "n1")
    assert read(client, bob, chat_id, 1).json() == {"seq": 1, "all_read_seq": 0}
    assert page(client, ada, chat_id).json()[0]["read"] is False
    assert read(client, cy, chat_id, 1).json() == {"seq": 1, "all_read_seq": 1}
    assert page(client, ada, chat_id).json()[0]["read"] is True


def test_member_added_later_starts_with_everything_read(client: TestClient[Any], make_account: Any) -> None:
    ada, bob, cy = make_account("Ada"), make_account("Bob"), make_account("Cy")
    chat_id = client.post(
        "/chats", json={"type": "group", "name": "G", "member_ids": [bob.id]}, headers=ada.headers
    ).json()["id"]
    send(client, ada, chat_id, "before cy", "n1")
    client.post(f"/groups/{chat_id}/add_user/{cy.id}", headers=ada.headers)
    assert client.get(f"/chats/{chat_id}", headers=cy.headers).json()["unread_count"] == 0
    assert page(client, cy, chat_id).json()[0]["text"] == "before cy"  # the whole history
    assert page(client, ada, chat_id).json()[0]["read"] is False  # Bob has not read it


def test_read_in_a_chat_you_are_not_in_is_not_found(
    client: TestClient[Any], pair: Any, make_account: Any
) -> None:
    _ada, _bob, chat_id = pair
    eve = make_account("Eve")
    assert read(client, eve, chat_id, 1).status_code == 404


@pytest.mark.parametrize("body", [{"seq": -1}, {"seq": "one"}, {}, {"seq": 1.5}, [1]])
def test_invalid_read_requests_are_refused(client: TestClient[Any], pair: Any, body: Any) -> None:
    _ada, bob, chat_id = pair
    assert client.post(f"/chats/{chat_id}/read", json=body, headers=bob.headers).status_code == 400


# History ------------------------------------------------------------------------------------------


@pytest.fixture
def long_chat(client: TestClient[Any], pair: Any, database_url: str) -> tuple[Account, int]:
    ada, bob, chat_id = pair
    insert_messages(database_url, chat_id, bob.id, [f"m{i}" for i in range(1, 31)])
    return ada, chat_id


def seqs(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [m["seq"] for m in response.json()]


def test_history_pages_by_offset_in_ascending_order(client: TestClient[Any], long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert seqs(page(client, ada, chat_id)) == list(range(1, 31))
    assert seqs(page(client, ada, chat_id, limit=10)) == list(range(1, 11))
    assert seqs(page(client, ada, chat_id, limit=10, offset=25)) == list(range(26, 31))
    assert seqs(page(client, ada, chat_id, offset=30)) == []


def test_history_after_seq_gives_the_messages_after_it(client: TestClient[Any], long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert seqs(page(client, ada, chat_id, after_seq=25)) == [26, 27, 28, 29, 30]
    assert seqs(page(client, ada, chat_id, after_seq=0, limit=3)) == [1, 2, 3]
    assert seqs(page(client, ada, chat_id, after_seq=30)) == []


def test_history_before_seq_gives_the_page_just_before_it(client: TestClient[Any], long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert seqs(page(client, ada, chat_id, before_seq=11, limit=5)) == [6, 7, 8, 9, 10]
    assert seqs(page(client, ada, chat_id, before_seq=3, limit=5)) == [1, 2]
    assert seqs(page(client, ada, chat_id, before_seq=1)) == []


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
def test_bad_history_parameters_are_refused(client: TestClient[Any], long_chat: Any, params: Any) -> None:
    ada, chat_id = long_chat
    response = page(client, ada, chat_id, **params)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_history_limit_of_200_is_allowed(client: TestClient[Any], long_chat: Any) -> None:
    ada, chat_id = long_chat
    assert len(seqs(page(client, ada, chat_id, limit=200))) == 30


def test_history_of_others_and_of_missing_chats_is_not_found(
    client: TestClient[Any], long_chat: Any, make_account: Any
) -> None:
    _ada, chat_id = long_chat
    eve = make_account("Eve")
    foreign, missing = page(client, eve, chat_id), page(client, eve, 999_999)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_messaging_endpoints_are_documented(client: TestClient[Any]) -> None:
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert {"201", "200", "400", "404"} <= set(paths["/chats/{chat_id}/messages"]["post"]["responses"])
    assert {"200", "400", "404"} <= set(paths["/history/{chat_id}"]["get"]["responses"])
    assert {"200", "404"} <= set(paths["/chats/{chat_id}/read"]["post"]["responses"])
    parameters = {p["name"] for p in paths["/history/{chat_id}"]["get"]["parameters"]}
    assert {"limit", "offset", "after_seq", "before_seq"} <= parameters
