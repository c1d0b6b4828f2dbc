"""Reading client frames: every malformed frame gets an error frame that says what is wrong."""

from __future__ import annotations

import pytest

from windi_chat.errors import (
    AlreadyMemberError,
    ChatNotFoundError,
    DatabaseUnavailableError,
    DomainError,
    InvalidMessageError,
)
from windi_chat.frames import ErrorFrame, ReadFrame, SendFrame
from windi_chat.protocol import decode_client_frame, error_frame


def test_a_send_frame_is_read_as_one() -> None:
    frame = decode_client_frame('{"type": "send", "client_id": "c-1", "text": "hi"}')
    assert frame == SendFrame(client_id="c-1", text="hi")


def test_a_read_frame_in_bytes_is_read_as_one() -> None:
    assert decode_client_frame(b'{"type": "read", "seq": 3}') == ReadFrame(seq=3)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"seq": 1}', "invalid_frame"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"type": ["send"]}', "unknown_type"),
        ('{"type": {"send": 1}}', "unknown_type"),
        ('{"type": "read", "seq": -1}', "invalid_frame"),
    ],
)
def test_a_malformed_frame_gets_an_error_frame(raw: str, code: str) -> None:
    answer = decode_client_frame(raw)
    assert isinstance(answer, ErrorFrame)
    assert answer.code == code
    assert answer.detail


def test_the_client_id_of_a_bad_frame_is_echoed() -> None:
    answer = decode_client_frame('{"type": "send", "client_id": "c-9", "text": 5}')
    assert isinstance(answer, ErrorFrame)
    assert (answer.code, answer.client_id) == ("invalid_frame", "c-9")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidMessageError("too long"), "invalid_frame"),
        (AlreadyMemberError(), "conflict"),
        (ChatNotFoundError(), "not_found"),
        (DatabaseUnavailableError(), "unavailable"),
    ],
)
def test_an_action_error_answers_with_the_code_of_its_kind(error: DomainError, code: str) -> None:
    assert error_frame(error, "c-1") == ErrorFrame(code=code, detail=str(error), client_id="c-1")
