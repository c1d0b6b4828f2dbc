"""Frames after the handshake: malformed ones get an error and the socket stays open; size and rate limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.api import Api
from tests.realtime.conftest import stored_messages
from tests.wsclient import (
    is_type,
    receive_count,
    receive_until,
    receive_until_closed,
    send_and_confirm,
    send_frame,
)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
MAX_FRAME_BYTES = 65_536


BAD_FRAMES: dict[str, tuple[str, str, str | None]] = {
    # name: (raw frame, error code, client_id echoed)
    "not-json": ("hello", "invalid_json", None),
    "truncated-json": ('{"type": "send"', "invalid_json", None),
    "array": ("[1, 2]", "invalid_frame", None),
    "string": ('"send"', "invalid_frame", None),
    "null": ("null", "invalid_frame", None),
    "unknown-type": ('{"type": "shout", "client_id": "u1"}', "unknown_type", "u1"),
    "unknown-type-no-client-id": ('{"type": "shout"}', "unknown_type", None),
    "no-type": ('{"text": "hi"}', "invalid_frame", None),
    "empty-client-id": ('{"type": "send", "client_id": "", "text": "hi"}', "invalid_frame", ""),
    "long-client-id": (
        json.dumps({"type": "send", "client_id": "c" * 65, "text": "hi"}),
        "invalid_frame",
        "c" * 65,
    ),
    "missing-text": ('{"type": "send", "client_id": "t1"}', "invalid_frame", "t1"),
    "blank-text": ('{"type": "send", "client_id": "t2", "text": " \\n\\t "}', "invalid_frame", "t2"),
    "long-text": (
        json.dumps({"type": "send", "client_id": "t3", "text": "x" * 4097}),
        "invalid_frame",
        "t3",
    ),
    "long-text-after-trimming": (
        json.dumps({"type": "send", "client_id": "t4", "text": " " + "x" * 4097 + " "}),
        "invalid_frame",
        "t4",
    ),
    "negative-seq": ('{"type": "read", "seq": -1}', "invalid_frame", None),
    "string-seq": ('{"type": "read", "seq": "3"}', "invalid_frame", None),
    "float-seq": ('{"type": "read", "seq": 1.5}', "invalid_frame", None),
    "missing-seq": ('{"type": "read"}', "invalid_frame", None),
    "unknown-field": ('{"type": "typing", "extra": 1}', "invalid_frame", None),
}


@pytest.mark.parametrize("name", BAD_FRAMES)
def test_bad_frame_gets_an_error_and_the_socket_stays_open(
    rest: Api, connect: Any, shared_database_url: str, name: str
) -> None:
    raw, code, client_id = BAD_FRAMES[name]
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    socket.send(raw)
    error = receive_until(socket, lambda _frame: True)[-1]

    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["detail"], str)
    assert error["detail"]
    assert error.get("client_id") == client_id
    assert send_and_confirm(socket, "after-error")["seq"] == 1
    assert [row.client_id for row in stored_messages(shared_database_url, chat_id)] == ["after-error"]


def test_text_of_4096_characters_after_trimming_is_accepted(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    sent = send_and_confirm(socket, "longest", "  " + "x" * 4096 + "\n")

    assert sent["text"] == "x" * 4096


def test_frame_of_exactly_the_size_limit_is_read(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    frame = '{"type": "typing", "padding": "' + "x" * MAX_FRAME_BYTES
    frame = frame[: MAX_FRAME_BYTES - 2] + '"}'
    assert len(frame.encode()) == MAX_FRAME_BYTES

    socket.send(frame)

    assert receive_until(socket, is_type("error"))[-1]["code"] == "invalid_frame"
    send_and_confirm(socket, "still-open")


def test_frame_over_the_size_limit_closes_the_socket_with_1009(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    socket.send(json.dumps({"type": "send", "client_id": "big", "text": "x" * MAX_FRAME_BYTES}))

    assert receive_until_closed(socket) == ([], CLOSE_TOO_BIG)


def test_burst_of_50_frames_is_not_rate_limited(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)

    for _ in range(50):
        send_frame(ada_socket, type="typing")

    # A refused frame is answered with an error and never published: all 50 reaching Bob proves none was.
    frames = receive_count(bob_socket, is_type("typing"), 50)
    assert [f["type"] for f in frames] == ["typing"] * 50


def test_flooding_gets_rate_limited_errors_then_a_close_with_1008(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    for _ in range(400):
        try:
            send_frame(socket, type="typing")
        except ConnectionClosed:  # the close code is read below
            break
    frames, code = receive_until_closed(socket)

    assert frames
    assert {(f["type"], f["code"]) for f in frames} == {("error", "rate_limited")}
    assert code == CLOSE_POLICY
