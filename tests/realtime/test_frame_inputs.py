"""The socket answers every frame and handshake input with an error frame or a close code a client can
read: ids out of range, control and invisible characters, deep nesting. A bad frame logs one short line.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.api import Api
from tests.conftest import LiveServer, wait_for
from tests.wsclient import receive_until, receive_until_closed, send_and_confirm, send_frame

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


BAD_FRAMES = {
    "seq-past-64-bits": json.dumps({"type": "read", "seq": 2**63}),
    "negative-seq": json.dumps({"type": "read", "seq": -1}),
    "nul-in-text": json.dumps({"type": "send", "client_id": "c1", "text": "a\u0000b"}),
    "escape-in-text": json.dumps({"type": "send", "client_id": "c1", "text": "a\u001b[2Jb"}),
    "c1-control-in-text": json.dumps({"type": "send", "client_id": "c1", "text": "a\u0085b"}),
    "control-in-client-id": json.dumps({"type": "send", "client_id": "c\u0001", "text": "hi"}),
    "invisible-text": json.dumps({"type": "send", "client_id": "c1", "text": "\u200b\u2060\ufeff"}),
    "deep-33": '{"type": "send", "client_id": "c1", "text": ' + _deep(33) + "}",
    "deep-unknown-field": '{"type": "send", "x": ' + _deep(5_000) + "}",
    "deep-array": _deep(20_000),
    "deep-objects": '{"a":' * 3_000 + "1" + "}" * 3_000,
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_a_bad_frame_gets_invalid_frame_and_the_socket_stays_open(rest: Api, connect: Any, name: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    socket.send(BAD_FRAMES[name])
    error = receive_until(socket, lambda _frame: True)[-1]

    assert error["type"] == "error"
    assert error["code"] == "invalid_frame"
    assert send_and_confirm(socket, "after-error")["seq"] == 1


def test_newlines_and_tabs_pass_on_the_socket(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    assert send_and_confirm(socket, "lines", "one\n\ttwo")["text"] == "one\n\ttwo"


@pytest.mark.parametrize("chat_id", [str(2**63), "99999999999999999999999", "0", "-1"])
def test_a_socket_to_a_chat_id_out_of_range_is_closed_with_4403(
    rest: Api, connect: Any, chat_id: str
) -> None:
    (ada,) = rest.people("Ada")
    socket = connect(chat_id, ada.token)

    assert receive_until_closed(socket) == ([], CLOSE_FORBIDDEN)


@pytest.mark.parametrize("after_seq", [str(2**63), "9" * 5_000])
def test_an_after_seq_out_of_range_is_closed_with_4400(rest: Api, connect: Any, after_seq: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token, after_seq=after_seq)

    assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST)


def test_bad_frames_log_one_short_line_each_without_their_text(
    rest: Api, connect: Any, shared_server: LiveServer
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    secret = f"private-words-{uuid.uuid4()}"
    frames = [
        json.dumps({"type": "send", "client_id": "c1", "text": f"{secret}\u0000"}),
        json.dumps({"type": "send", "client_id": "c1", "text": secret, "extra": _deep(40)}),
        json.dumps({"type": "read", "seq": 2**63, "note": secret}),
        json.dumps({"type": secret}),
    ]
    start = len(shared_server.log())

    for frame in frames:
        socket.send(frame)
        receive_until(socket, lambda f: f["type"] == "error")
    send_frame(socket, type="typing")  # a good frame after them: the server has read them all
    logged = wait_for(lambda: _refusals(shared_server.log()[start:]), timeout=10)

    new_log = shared_server.log()[start:]
    assert len(logged) == len(frames)
    assert all(len(line) < 200 for line in logged)
    assert secret not in new_log
    assert "Traceback" not in new_log


def _refusals(log: str) -> list[str] | None:
    lines = [line for line in log.splitlines() if "Refused a frame" in line]
    return lines if len(lines) >= 4 else None


@pytest.mark.parametrize(
    "raw",
    [
        "\U000f3c9a",  # found by the frame fuzzer: the typed decoder calls it "not a frame", not "not JSON"
        '{"type": "\\u0014", "client_id": "\\u00fe',  # found by the frame fuzzer: cut short after a bad type
        '"a string that never ends',
        "tru",
    ],
)
def test_text_that_is_not_json_gets_invalid_json(rest: Api, connect: Any, raw: str) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)

    socket.send(raw)
    error = receive_until(socket, lambda _frame: True)[-1]

    assert (error["type"], error["code"]) == ("error", "invalid_json")
    assert send_and_confirm(socket, "after-error")["seq"] == 1
