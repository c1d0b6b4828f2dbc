"""A socket's sends are stored without waiting for each other's ack, and answered in the order they came.

Several sends of one socket can then share a batch; the client still sees one answer per frame, in order,
and a frame other than a send is handled only after the sends before it are answered.
"""

from __future__ import annotations

from typing import Any

from tests.api import Api
from tests.wsclient import receive_count, send_frame

SENDS = 20


def _answers(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] in ("ack", "error")]


def test_sends_in_one_breath_are_answered_in_frame_order(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    sent = [f"p-{index}" for index in range(SENDS)]
    for index, client_id in enumerate(sent):
        # One send in the middle is refused, and one repeats an earlier client id.
        text = "   " if index == 7 else f"message {index}"
        send_frame(socket, type="send", client_id=client_id, text=text)
    send_frame(socket, type="send", client_id=sent[3], text="a repeat")

    frames = receive_count(socket, lambda f: f["type"] in ("ack", "error"), SENDS + 1)
    answers = _answers(frames)
    assert [a["client_id"] for a in answers] == [*sent, sent[3]]
    assert [a["type"] for a in answers].count("error") == 1
    assert answers[7]["type"] == "error"
    acked = [a["message"] for a in answers if a["type"] == "ack"]
    # Seqs follow the frames' order, and the repeat answers with the original message.
    assert [m["seq"] for m in acked[:-1]] == list(range(1, SENDS))
    assert acked[-1] == acked[3]
    assert [m["text"] for m in rest.history(ada, chat_id)] == [f"message {i}" for i in range(SENDS) if i != 7]


def test_a_frame_after_sends_is_handled_once_they_are_answered(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    sending, watching = connect(chat_id, bob.token), connect(chat_id, ada.token)
    for index in range(5):
        send_frame(sending, type="send", client_id=f"t-{index}", text="typed")
    send_frame(sending, type="typing")
    # The typing frame waits for the five sends' acks, so it reaches the other member after them.
    frames = receive_count(watching, lambda f: f["type"] == "typing", 1)
    assert [f["type"] for f in frames] == ["message"] * 5 + ["typing"]
    answers = _answers(receive_count(sending, lambda f: f["type"] in ("ack", "error"), 5))
    assert [a["client_id"] for a in answers] == [f"t-{index}" for index in range(5)]
