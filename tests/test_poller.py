"""Degraded mode in one process, on both databases: what the poller reads, and how much at a time."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import make_settings, register_and_login, wait_for
from tests.test_delivery import fail_always, guarded_inner_backend, health_status, message_ids, send
from windi_chat import poll_sql, poller
from windi_chat.app import create_app
from windi_chat.config import Settings


def test_one_statement_reads_the_new_messages_of_every_watched_chat(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = register_and_login(client, "Ada")
    others = [register_and_login(client, name) for name in ("Bob", "Cy", "Di")]  # one chat with each
    chats = [
        client.post("/chats", json={"type": "private", "user_id": other.id}, headers=ada.headers).json()["id"]
        for other in others
    ]
    rounds: list[set[int]] = []
    read = poll_sql.messages_after

    async def recorded(session: Any, cursors: dict[int, int], limit: int) -> Any:
        rounds.append(set(cursors))
        return await read(session, cursors, limit)

    monkeypatch.setattr(poll_sql, "messages_after", recorded)
    fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    sockets = [client.websocket_connect(f"/ws/{chat}?token={ada.token}") for chat in chats]
    try:
        entered = [socket.__enter__() for socket in sockets]
        for chat in chats:
            send(client, ada, chat, f"in-{chat}")
        for socket, chat in zip(entered, chats, strict=True):
            assert message_ids(socket, f"in-{chat}") == [f"in-{chat}"]
    finally:
        for socket in sockets:
            socket.__exit__(None, None, None)
    assert health_status(client) == "degraded"
    assert set(chats) in rounds  # all three chats in one statement, not one statement per chat


def test_a_chat_with_more_new_messages_than_one_read_takes_gets_them_all_in_order(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "POLL_ROWS", 2)
    ada, bob = register_and_login(client, "Ada"), register_and_login(client, "Bob")
    chat_id = client.post("/chats", json={"type": "private", "user_id": bob.id}, headers=ada.headers).json()[
        "id"
    ]
    fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
        for index in range(7):
            send(client, ada, chat_id, f"m-{index}")
        assert message_ids(socket, "m-6") == [f"m-{index}" for index in range(7)]


def test_the_poll_interval_is_a_setting(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINDI_DELIVERY_POLL_SECONDS", "0.2")
    assert Settings.from_env().delivery_poll_seconds == 0.2
    app = create_app(make_settings(database_url, delivery_poll_seconds=0.2))
    with TestClient(app=app) as client:
        ada, bob = register_and_login(client, "Ada"), register_and_login(client, "Bob")
        chat_id = client.post(
            "/chats", json={"type": "private", "user_id": bob.id}, headers=ada.headers
        ).json()
        down = fail_always(monkeypatch, guarded_inner_backend(app), "publish")
        with client.websocket_connect(f"/ws/{chat_id['id']}?token={bob.token}") as socket:
            send(client, ada, chat_id["id"], "polled")
            assert message_ids(socket, "polled") == ["polled"]
            down.clear()
            wait_for(lambda: health_status(client) == "ok", interval=0.1)


def test_a_member_added_and_a_marker_moved_while_polling_reach_the_sockets(
    client: TestClient[Any], api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, member, newcomer = api.people("Owner", "Member", "Newcomer")
    chat_id = api.group(owner, "Team", [member])["id"]
    api.send(owner, chat_id, "hello", "hello")
    fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    with client.websocket_connect(f"/ws/{chat_id}?token={owner.token}") as socket:
        send(client, owner, chat_id, "first-polled")  # starts degraded mode
        assert message_ids(socket, "first-polled") == ["first-polled"]
        api.add_member(owner, chat_id, newcomer)
        answer = api.read(member, chat_id, 2)
        seen: list[dict[str, Any]] = []
        while not any(f["type"] == "read" for f in seen) or not any(
            f["type"] == "member_added" for f in seen
        ):
            seen.append(socket.receive_json(timeout=10))
    assert {"type": "member_added", "chat_id": chat_id, "user_id": newcomer.id} in seen
    read = next(f for f in seen if f["type"] == "read")
    assert (read["user_id"], read["seq"], read["all_read_seq"]) == (member.id, 2, answer["all_read_seq"])
