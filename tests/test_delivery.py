"""Live delivery survives failures of the channels backend: sockets are told to catch up, delivery goes on."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from litestar.channels import ChannelsPlugin
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from tests.conftest import make_settings, register_and_login
from windi_chat.app import create_app

BREAK = b"break the stream"


def guarded_inner_backend(app: Any) -> Any:
    """The real backend inside the guard (reached through private attributes, to inject failures)."""
    return app.plugins.get(ChannelsPlugin)._backend._backend


def private_chat(client: TestClient[Any]) -> tuple[Any, Any, int]:
    ada, bob = register_and_login(client, "Ada"), register_and_login(client, "Bob")
    chat = client.post("/chats", json={"type": "private", "user_id": bob.id}, headers=ada.headers).json()
    return ada, bob, chat["id"]


def send(client: TestClient[Any], who: Any, chat_id: int, client_id: str) -> None:
    response = client.post(
        f"/chats/{chat_id}/messages", json={"text": client_id, "client_id": client_id}, headers=who.headers
    )
    assert response.status_code == 201


def test_failed_publish_closes_the_chat_sockets_with_1012_and_delivery_goes_on(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob, chat_id = private_chat(client)
    backend = guarded_inner_backend(client.app)
    publish = backend.publish
    failures: list[bytes] = []

    async def publish_failing_once(data: bytes, channels: Any) -> None:
        if not failures:
            failures.append(data)
            raise ConnectionError("backend unreachable")
        await publish(data, channels)

    monkeypatch.setattr(backend, "publish", publish_failing_once)
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
        send(client, ada, chat_id, "lost-live")
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_text(timeout=10)
        assert closed.value.code == 1012
    assert failures

    # The publish worker still runs, and the reconnect procedure recovers the lost message.
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}&after_seq=0") as socket:
        assert socket.receive_json(timeout=10)["message"]["client_id"] == "lost-live"
        send(client, ada, chat_id, "live-again")
        assert socket.receive_json(timeout=10)["message"]["client_id"] == "live-again"


def test_broken_event_stream_closes_all_sockets_with_1012_and_is_reopened(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(database_url))
    backend = guarded_inner_backend(app)
    stream_events = backend.stream_events

    async def breakable_stream() -> AsyncGenerator[tuple[str, bytes], None]:
        async for channel, payload in stream_events():
            if payload == BREAK:
                raise ConnectionError("stream broke")
            yield channel, payload

    monkeypatch.setattr(backend, "stream_events", breakable_stream)
    with TestClient(app=app) as client:
        ada, bob, chat_id = private_chat(client)
        with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
            send(client, ada, chat_id, "before")
            assert socket.receive_json(timeout=10)["message"]["client_id"] == "before"
            app.plugins.get(ChannelsPlugin).publish(BREAK, f"chat:{chat_id}")
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_text(timeout=10)
            assert closed.value.code == 1012

        with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}&after_seq=1") as socket:
            send(client, ada, chat_id, "after")
            assert socket.receive_json(timeout=10)["message"]["client_id"] == "after"
