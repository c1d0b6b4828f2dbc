"""Reconnecting with ``after_seq``: the missed messages first, then live ones, or a resync frame."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from tests.api import Api
from tests.conftest import LiveServer, insert_messages, make_settings, wait_for
from tests.wsclient import is_message, is_type, messages_in, receive_until
from windi_chat.app import create_app
from windi_chat.catch_up import CATCH_UP_PAGE
from windi_chat.config import Settings

CATCH_UP_LIMIT = Settings().ws_catch_up_limit  # what the shared server runs with


def test_after_seq_sends_the_missed_messages_then_live_ones(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    for n in range(1, 6):
        rest.send(ada, chat_id, "hi", f"m{n}", expect=201)

    bob_socket = connect(chat_id, bob.token, after_seq=2)
    rest.send(ada, chat_id, "hi", "m6")

    frames = receive_until(bob_socket, is_message(seq=6))
    assert [f["type"] for f in frames] == ["message"] * 4
    assert [(m["seq"], m["client_id"]) for m in messages_in(frames)] == [
        (3, "m3"),
        (4, "m4"),
        (5, "m5"),
        (6, "m6"),
    ]


def test_catch_up_has_no_gap_or_duplicate_while_messages_keep_arriving(
    rest: Api, shared_server: LiveServer, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    sent_count = 0

    def keep_sending() -> None:
        nonlocal sent_count
        with shared_server.http() as http:
            for n in range(1, 61):
                Api(http).send(ada, chat_id, "hi", f"m{n}", expect=201)
                sent_count = n

    with ThreadPoolExecutor(max_workers=1) as pool:
        sending = pool.submit(keep_sending)
        wait_for(lambda: sent_count >= 10 or sending.done())
        bob_socket = connect(chat_id, bob.token, after_seq=3)
        sending.result()

    seqs = [m["seq"] for m in messages_in(receive_until(bob_socket, is_message(seq=60)))]
    assert seqs == list(range(4, 61))


def test_too_many_missed_messages_get_a_resync_frame_and_the_socket_stays_live(
    rest: Api, connect: Any, shared_database_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    insert_messages(shared_database_url, chat_id, ada.id, [f"old {n}" for n in range(1, 1006)])

    bob_socket = connect(chat_id, bob.token, after_seq=4)
    first = receive_until(bob_socket, lambda _frame: True)
    rest.send(ada, chat_id, "hi", "live")

    assert first == [{"type": "resync", "after_seq": 4, "last_seq": 1005}]
    assert messages_in(receive_until(bob_socket, is_type("message")))[0]["seq"] == 1006


def test_after_seq_beyond_the_last_message_gets_a_resync_and_live_messages_still_come(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, chat_id, "hi", "one")

    bob_socket = connect(chat_id, bob.token, after_seq=50)
    first = receive_until(bob_socket, lambda _frame: True)
    rest.send(ada, chat_id, "hi", "two")

    assert first == [{"type": "resync", "after_seq": 50, "last_seq": 1}]
    assert messages_in(receive_until(bob_socket, is_type("message")))[0]["seq"] == 2


@contextmanager
def message_rows_read() -> Iterator[list[int]]:
    """How many message rows each query in this process returned (the app's among them)."""
    counts: list[int] = []

    def count(state: ORMExecuteState) -> Any:
        if "FROM messages" not in str(state.statement):
            return None
        frozen = state.invoke_statement().freeze()
        counts.append(len(frozen().all()))
        return frozen()

    event.listen(Session, "do_orm_execute", count)
    try:
        yield counts
    finally:
        event.remove(Session, "do_orm_execute", count)


def _in_process_chat(database_url: str, messages: int) -> tuple[Any, Any, Any, int]:
    """An app in this process, and a private chat of Ada's and Bob's holding ``messages`` messages."""
    app = create_app(make_settings(database_url))
    with TestClient(app=app) as client:
        api = Api(client)
        ada, bob = api.people("Ada", "Bob")
        chat_id = api.private_chat(ada, bob)["id"]
    insert_messages(database_url, chat_id, ada.id, [f"old {n}" for n in range(1, messages + 1)])
    return app, ada, bob, chat_id


def test_deciding_on_a_resync_reads_no_message_rows(database_url: str) -> None:
    app, _ada, bob, chat_id = _in_process_chat(database_url, CATCH_UP_LIMIT + 5)
    url = f"/ws/{chat_id}?token={bob.token}&after_seq=4"
    with (
        TestClient(app=app) as client,
        message_rows_read() as counts,
        client.websocket_connect(url) as socket,
    ):
        assert socket.receive_json(timeout=10) == {"type": "resync", "after_seq": 4, "last_seq": 1005}
    assert counts == []


def test_a_catch_up_is_read_a_page_at_a_time(database_url: str) -> None:
    app, _ada, bob, chat_id = _in_process_chat(database_url, CATCH_UP_PAGE * 2 + 50)
    url = f"/ws/{chat_id}?token={bob.token}&after_seq=0"
    with (
        TestClient(app=app) as client,
        message_rows_read() as counts,
        client.websocket_connect(url) as socket,
    ):
        seqs = [socket.receive_json(timeout=10)["message"]["seq"] for _ in range(CATCH_UP_PAGE * 2 + 50)]
    assert seqs == list(range(1, CATCH_UP_PAGE * 2 + 51))
    assert counts == [CATCH_UP_PAGE, CATCH_UP_PAGE, 50]
