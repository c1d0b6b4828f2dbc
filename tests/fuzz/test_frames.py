"""Hypothesis drives the socket's frame grammar over a real socket: random, near-valid and deeply nested
frames. Each gets normal frames or an error frame, never a close for an internal error, nor silence.
"""

from __future__ import annotations

import itertools
import json
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.fuzz.conftest import EXAMPLES, World
from tests.wsclient import open_socket

pytestmark = pytest.mark.fuzz

# What a server frame may be: everything docs/protocol.md lists.
SERVER_FRAME_TYPES = {
    "message",
    "message_updated",
    "ack",
    "read",
    "typing",
    "error",
    "resync",
    "auth_ok",
    "member_added",
    "member_removed",
}
# Close codes that mean the server failed, not that it refused: internal error, and none at all.
FAILURES = {1006, 1011, 4500}
RECEIVE_TIMEOUT = 15.0

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=80) | st.sampled_from(["\u200b", "\u202e", "\x00", "a\tb\nc", " ", "\ufeff\u2060"])
near_valid = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["send", "read", "typing", "auth", "edit", "delete", "react"])
        | st.text(max_size=12)
        | json_values
    },
    optional={
        "client_id": st.text(max_size=70) | json_values,
        "text": texts | json_values,
        "seq": st.integers(min_value=-(2**64), max_value=2**64) | json_values,
        "token": st.text(max_size=60) | json_values,
        "emoji": st.text(max_size=40) | json_values,
        "on": st.booleans() | json_values,
        "extra": json_values,
    },
).map(json.dumps)
deep = st.tuples(st.integers(min_value=1, max_value=5_000), st.sampled_from(["[]", "{}"])).map(
    lambda depth_kind: '{"type": "send", "text": ' + _nest(*depth_kind) + "}"
)
frames: st.SearchStrategy[str | bytes] = (
    near_valid
    | json_values.map(json.dumps)
    | deep
    | st.text(max_size=200)
    | st.binary(max_size=200)
    | near_valid.map(lambda frame: frame[: len(frame) // 2])  # cut short
)


def _nest(depth: int, kind: str) -> str:
    opening, closing = ('{"a":', "}") if kind == "{}" else ("[", "]")
    return opening * depth + "1" + closing * depth


class Client:
    """One socket on the group, reopened when the server closes it for a reason it may have."""

    def __init__(self, world: World, opened: ExitStack) -> None:
        self.world = world
        self.opened = opened
        self.probes = itertools.count()
        self.socket = self._open()

    def _open(self) -> ClientConnection:
        socket = open_socket(self.world.server.ws_url, self.world.group_id, self.world.ada.token)
        return self.opened.enter_context(socket)

    def exchange(self, frame: str | bytes) -> None:
        """Send ``frame`` and then a probe; everything before the probe's answer must be a proper frame."""
        probe = f"probe-{next(self.probes)}"
        try:
            self.socket.send(frame)
            self.socket.send(json.dumps({"type": probe}))
            while True:
                answer = json.loads(self.socket.recv(timeout=RECEIVE_TIMEOUT))
                assert isinstance(answer, dict), answer
                assert answer.get("type") in SERVER_FRAME_TYPES, answer
                assert answer.get("code") != "internal", (frame, answer)
                if answer.get("type") == "error" and probe in answer.get("detail", ""):
                    return
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            assert code not in FAILURES, (frame, code)
            self.socket = self._open()


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_every_frame_gets_an_answer_and_no_internal_error(world: World) -> None:
    with ExitStack() as opened:
        client = Client(world, opened)
        _fuzz(client)
    log = world.server.log()
    assert "Uncaught exception" not in log
    assert "Frame failed" not in log


def _fuzz(client: Client) -> None:
    @settings(
        max_examples=EXAMPLES * 5,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(frames)
    def answered(frame: str | bytes) -> None:
        client.exchange(frame)

    answered()


def test_probe_frames_are_answered(world: World) -> None:
    """The probe the fuzz run relies on: an unknown type is answered with an error naming it."""
    with ExitStack() as opened:
        client = Client(world, opened)
        client.exchange(json.dumps({"type": "typing"}))
        assert next(client.probes) == 1
