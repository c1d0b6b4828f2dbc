"""Live delivery survives failures of the channels backend: sockets are told to catch up, delivery goes on."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from litestar.channels import ChannelsPlugin
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from tests.conftest import make_settings, register_and_login, wait_for
from windi_chat.app import create_app
from windi_chat.config import ConfigurationError
from windi_chat.delivery import create_backend
from windi_chat.namespaces import NamespacedBackend
from windi_chat.pg_channels import PayloadAssembler, encode_payloads

BREAK = b"break the stream"


def app_channels(app: Any) -> dict[str, Any]:
    """The channels the plugin holds an entry for (a private attribute: what a leak would grow)."""
    channels: dict[str, Any] = app.plugins.get(ChannelsPlugin)._channels
    return channels


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


def fail_once(monkeypatch: pytest.MonkeyPatch, backend: Any, method: str) -> list[Any]:
    """Make ``backend.<method>`` raise once, as an unreachable backend would; returns the failed calls."""
    original = getattr(backend, method)
    failures: list[Any] = []

    async def failing_once(*args: Any) -> None:
        if not failures:
            failures.append(args)
            raise ConnectionError("backend unreachable")
        await original(*args)

    monkeypatch.setattr(backend, method, failing_once)
    return failures


def fail_always(monkeypatch: pytest.MonkeyPatch, backend: Any, method: str) -> list[Any]:
    """Make ``backend.<method>`` raise until the returned list is cleared (the backend is back)."""
    original = getattr(backend, method)
    down: list[Any] = [True]

    async def failing(*args: Any) -> None:
        if down:
            raise ConnectionError("backend unreachable")
        await original(*args)

    monkeypatch.setattr(backend, method, failing)
    return down


def message_ids(socket: Any, until: str) -> list[str]:
    """The client ids of the messages the socket receives, up to and including ``until``."""
    received: list[str] = []
    while until not in received:
        frame = socket.receive_json(timeout=10)
        if frame["type"] == "message":
            received.append(frame["message"]["client_id"])
    return received


def health_status(client: TestClient[Any]) -> str:
    response = client.get("/health")
    assert response.status_code == 200
    status: str = response.json()["status"]
    return status


def test_a_failed_publish_is_delivered_from_the_database_and_the_socket_stays_open(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob, chat_id = private_chat(client)
    failures = fail_once(monkeypatch, guarded_inner_backend(client.app), "publish")
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
        send(client, ada, chat_id, "lost-live")
        assert message_ids(socket, "lost-live") == ["lost-live"]
        assert failures
        wait_for(lambda: health_status(client) == "ok", interval=0.2)  # live delivery has taken over again
        send(client, ada, chat_id, "live-again")
        assert message_ids(socket, "live-again") == ["live-again"]  # once, and nothing in between


def test_broken_event_stream_leaves_sockets_open_and_is_reopened(
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
            assert message_ids(socket, "before") == ["before"]
            app.plugins.get(ChannelsPlugin).publish(BREAK, f"chat:{chat_id}")
            send(client, ada, chat_id, "after")
            assert message_ids(socket, "after") == ["after"]
            wait_for(lambda: health_status(client) == "ok", interval=0.2)
            send(client, ada, chat_id, "live")
            assert message_ids(socket, "live") == ["live"]


def test_a_failed_subscribe_admits_the_socket_and_subscribes_again_once_the_backend_is_back(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob, chat_id = private_chat(client)
    down = fail_always(monkeypatch, guarded_inner_backend(client.app), "subscribe")
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
        assert health_status(client) == "degraded"
        send(client, ada, chat_id, "polled")
        assert message_ids(socket, "polled") == ["polled"]
        down.clear()
        wait_for(lambda: health_status(client) == "ok", interval=0.2)
        # The plugin must not believe the chat is subscribed while it is not: live events arrive.
        assert client.app.plugins.get(ChannelsPlugin)._backend.is_subscribed(f"chat:{chat_id}")
        send(client, ada, chat_id, "live")
        assert message_ids(socket, "live") == ["live"]


def test_health_says_degraded_while_the_backend_is_down_and_ok_once_it_is_back(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob, chat_id = private_chat(client)
    assert health_status(client) == "ok"
    down = fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
        send(client, ada, chat_id, "during")
        assert message_ids(socket, "during") == ["during"]
        assert health_status(client) == "degraded"
        down.clear()
        wait_for(lambda: health_status(client) == "ok", interval=0.2)


def test_sockets_to_many_chats_leave_no_channel_behind_once_closed(client: TestClient[Any]) -> None:
    """A client probing chat ids subscribes to each on the way in; closing must forget every one."""
    ada, bob, chat_id = private_chat(client)
    subscribed = app_channels(client.app)

    def chat_channels() -> list[str]:  # the process also listens for revoked sessions
        return [channel for channel in subscribed if channel.startswith("chat:")]

    for probed in range(chat_id + 1, chat_id + 51):
        with client.websocket_connect(f"/ws/{probed}?token={bob.token}") as socket:
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_text(timeout=10)
            assert closed.value.code == 4403
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as socket:
        send(client, ada, chat_id, "live")
        assert socket.receive_json(timeout=10)["message"]["client_id"] == "live"
        assert chat_channels() == [f"chat:{chat_id}"]
    wait_for(lambda: not chat_channels())


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", "MemoryChannelsBackend"),
        ("redis://127.0.0.1:6379/0", "RedisChannelsPubSubBackend"),
        ("postgresql://windi@db:5432/windi", "PostgresChannelsBackend"),
        ("postgresql+asyncpg://windi@db:5432/windi", "PostgresChannelsBackend"),
    ],
)
def test_channels_url_selects_the_backend(url: str, kind: str) -> None:
    backend = create_backend(url, "windi")
    shared = not url.startswith("memory")
    assert isinstance(backend, NamespacedBackend) is shared  # a shared backend's names carry a namespace
    assert type(backend.backend if isinstance(backend, NamespacedBackend) else backend).__name__ == kind


def test_unknown_channels_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_backend("kafka://user:hunter2@broker:9092", "windi")
    assert "kafka://user:***@broker:9092" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("text", ["short", "a" * 20_000, "\N{GRINNING FACE}" * 4096, "é" * 7000])
def test_postgres_payloads_stay_under_the_notify_limit_and_join_back(text: str) -> None:
    assembler = PayloadAssembler()
    data = f'M1\n{{"text":"{text}"}}'.encode()
    payloads = encode_payloads(data, "0a1b2c3d", 1)
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    assembled = [assembler.feed(payload) for payload in reversed(payloads)]  # any order within one event
    assert assembled[:-1] == [None] * (len(payloads) - 1)
    assert assembled[-1] == data


@pytest.mark.parametrize("payload", ["", "not an event", "+x:1", "+x:9:2:piece", "+x:a:b:piece"])
def test_a_foreign_notification_on_a_chat_channel_is_ignored(payload: str) -> None:
    assert PayloadAssembler().feed(payload) is None
