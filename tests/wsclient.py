"""A small synchronous client for the chat WebSocket: send JSON frames, read them with a deadline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

__all__ = (
    "CLOSED_WITHOUT_CODE",
    "Frame",
    "is_ack",
    "is_message",
    "is_type",
    "messages_in",
    "open_gateway",
    "open_socket",
    "receive_count",
    "receive_until",
    "receive_until_closed",
    "send_and_confirm",
    "send_frame",
    "send_sync",
)

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]

TIMEOUT = 10.0
# What ``receive_until_closed`` reports when the connection ended without a close frame.
CLOSED_WITHOUT_CODE = 1006


def open_socket(
    ws_url: str,
    chat_id: int | str,
    token: str | None = None,
    after_seq: int | str | None = None,
    headers: dict[str, str] | None = None,
    max_queue: int | None = 16,
    after_rev: int | str | None = None,
) -> ClientConnection:
    """Connect to ``/ws/{chat_id}``, with the token in the query string unless it is None.

    Use the connection as a context manager (``with open_socket(...) as socket:``): it closes on exit.
    ``max_queue=None`` keeps reading however many frames the test leaves unread, so that closing does
    not wait out the close timeout behind them (with the default, reading stops at 16).
    """
    query = {}
    if token is not None:
        query["token"] = token
    if after_seq is not None:
        query["after_seq"] = str(after_seq)
    if after_rev is not None:
        query["after_rev"] = str(after_rev)
    url = f"{ws_url}/ws/{chat_id}" + (f"?{urlencode(query)}" if query else "")
    return connect(url, open_timeout=TIMEOUT, additional_headers=headers, max_queue=max_queue)


def open_gateway(
    ws_url: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    max_queue: int | None = 16,
) -> ClientConnection:
    """Connect to the gateway ``/ws``, with the token in the query string unless it is None.

    Use the connection as a context manager, as ``open_socket``'s; :func:`send_sync` opens with a sync.
    """
    url = f"{ws_url}/ws" + (f"?{urlencode({'token': token})}" if token is not None else "")
    return connect(url, open_timeout=TIMEOUT, additional_headers=headers, max_queue=max_queue)


def send_sync(socket: ClientConnection, chats: dict[int, int]) -> None:
    """The gateway's opening frame: per chat, the seq after which the device wants what it missed."""
    send_frame(socket, type="sync", chats={str(chat_id): seq for chat_id, seq in chats.items()})


def send_frame(socket: ClientConnection, **frame: Any) -> None:
    socket.send(json.dumps(frame))


def is_type(kind: str) -> Predicate:
    return lambda frame: frame.get("type") == kind


def is_message(seq: int | None = None, client_id: str | None = None) -> Predicate:
    def matches(frame: Frame) -> bool:
        if frame.get("type") != "message":
            return False
        message = frame["message"]
        return (seq is None or message["seq"] == seq) and (
            client_id is None or message["client_id"] == client_id
        )

    return matches


def is_ack(client_id: str) -> Predicate:
    return lambda frame: frame.get("type") == "ack" and frame["client_id"] == client_id


def _next_frame(socket: ClientConnection, deadline: float, received: list[Frame], waiting_for: str) -> Frame:
    remaining = deadline - time.monotonic()
    try:
        raw = socket.recv(timeout=max(remaining, 0))
    except TimeoutError:
        pytest.fail(f"no frame {waiting_for} arrived in time; received before: {received}")
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        pytest.fail(f"socket closed with {code} while waiting for {waiting_for}; received: {received}")
    return json.loads(raw)


def receive_until(socket: ClientConnection, predicate: Predicate, timeout: float = TIMEOUT) -> list[Frame]:
    """Every frame up to and including the first that matches; fails at the deadline."""
    deadline = time.monotonic() + timeout
    received: list[Frame] = []
    while True:
        frame = _next_frame(socket, deadline, received, "matching the predicate")
        received.append(frame)
        if predicate(frame):
            return received


def receive_count(
    socket: ClientConnection, predicate: Predicate, count: int, timeout: float = TIMEOUT
) -> list[Frame]:
    """Every frame up to and including the ``count``-th that matches; fails at the deadline."""
    deadline = time.monotonic() + timeout
    received: list[Frame] = []
    matched = 0
    while matched < count:
        frame = _next_frame(socket, deadline, received, f"({matched}/{count} matched so far)")
        received.append(frame)
        matched += predicate(frame)
    return received


def receive_until_closed(socket: ClientConnection, timeout: float = TIMEOUT) -> tuple[list[Frame], int]:
    """Every frame until the server closes the socket, and the close code it sent."""
    deadline = time.monotonic() + timeout
    received: list[Frame] = []
    while True:
        remaining = deadline - time.monotonic()
        try:
            raw = socket.recv(timeout=max(remaining, 0))
        except TimeoutError:
            pytest.fail(f"socket still open at the deadline; received: {received}")
        except ConnectionClosed as exc:
            return received, exc.rcvd.code if exc.rcvd else CLOSED_WITHOUT_CODE
        received.append(json.loads(raw))


def send_and_confirm(socket: ClientConnection, client_id: str, text: str = "hi") -> Frame:
    """Send a message and wait for both its ack and its own message frame (in either order)."""
    send_frame(socket, type="send", client_id=client_id, text=text)
    frames = receive_count(socket, lambda f: is_ack(client_id)(f) or is_message(client_id=client_id)(f), 2)
    ack = next(f for f in frames if is_ack(client_id)(f))
    echo = next(f for f in frames if is_message(client_id=client_id)(f))
    assert ack["message"] == echo["message"]
    return dict(ack["message"])


def messages_in(frames: list[Frame]) -> list[Frame]:
    """The messages carried by the message frames among ``frames``, in order."""
    return [f["message"] for f in frames if f["type"] == "message"]
