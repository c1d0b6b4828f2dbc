"""Changes while the delivery backend is down: the poller reads them by rev, and hands over at the seam."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import touch, wait_for
from tests.test_delivery import fail_always, guarded_inner_backend, health_status
from windi_chat import poller


def receive_changes(socket: Any, until_rev: int) -> list[tuple[str, int, int]]:
    """``(frame type, seq, rev)`` of the message and message_updated frames, up to that of ``until_rev``."""
    received: list[tuple[str, int, int]] = []
    while not received or received[-1][2] != until_rev:
        frame = socket.receive_json(timeout=10)
        if frame["type"] in ("message", "message_updated"):
            received.append((frame["type"], frame["message"]["seq"], frame["message"]["rev"]))
    return received


def frames_until_closed(socket: Any) -> tuple[list[dict[str, Any]], int]:
    """Every frame up to the close, and the close code."""
    frames = []
    try:
        while True:
            frames.append(socket.receive_json(timeout=10))
    except WebSocketDisconnect as closed:
        return frames, closed.code


def receive_changes_until(
    socket: Any, done: Callable[[list[tuple[str, int, int]]], bool]
) -> list[tuple[str, int, int]]:
    received: list[tuple[str, int, int]] = []
    while not done(received):
        frame = socket.receive_json(timeout=10)
        if frame["type"] in ("message", "message_updated"):
            received.append((frame["type"], frame["message"]["seq"], frame["message"]["rev"]))
    return received


def test_while_polling_a_change_reaches_every_socket_once_and_new_messages_stay_in_seq_order(
    client: TestClient[Any], api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    for n in range(1, 4):
        api.send(ada, chat_id, "before", f"before-{n}")  # revs 1..3
    down = fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    with (
        client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as plain,
        client.websocket_connect(f"/ws/{chat_id}?token={bob.token}&after_rev=1") as by_rev,
    ):
        assert receive_changes(by_rev, 3) == [("message", 2, 2), ("message", 3, 3)]
        api.send(ada, chat_id, "polled", "polled-4")  # rev 4; its event is lost: degraded mode
        assert receive_changes(plain, 4) == [("message", 4, 4)]
        assert health_status(client) == "degraded"
        assert receive_changes(by_rev, 4) == [("message", 4, 4)]
        # Changes that no live event tells of: the poller finds them by rev.
        touch(database_url, chat_id, 2)  # rev 5
        touch(database_url, chat_id, 4)  # rev 6
        api.send(ada, chat_id, "polled", "polled-5")  # rev 7
        assert receive_changes(plain, 7) == [
            ("message_updated", 2, 5),
            ("message_updated", 4, 6),
            ("message", 5, 7),
        ]
        assert receive_changes(by_rev, 7) == [
            ("message_updated", 2, 5),
            ("message_updated", 4, 6),
            ("message", 5, 7),
        ]
        down.clear()
        wait_for(lambda: health_status(client) == "ok", interval=0.1)
        api.send(ada, chat_id, "live", "live-6")  # rev 8, live again: once, and nothing in between
        assert receive_changes(plain, 8) == [("message", 6, 8)]
        assert receive_changes(by_rev, 8) == [("message", 6, 8)]


def test_a_socket_that_follows_seqs_gets_a_message_changed_before_it_was_polled_as_new_in_seq_order(
    client: TestClient[Any], api: Api, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows come by rev, so a new message changed before the poller read it comes after a newer one;
    a socket that follows seqs still gets it as a new message, in its place.
    """
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    monkeypatch.setattr(poller, "POLL_ROWS", 2)
    fail_always(monkeypatch, guarded_inner_backend(client.app), "subscribe")  # polled from the start
    with (
        client.websocket_connect(f"/ws/{chat_id}?token={bob.token}") as plain,
        client.websocket_connect(f"/ws/{chat_id}?token={bob.token}&after_rev=0") as by_rev,
    ):
        assert health_status(client) == "degraded"
        for n in range(1, 4):
            api.send(ada, chat_id, "polled", f"polled-{n}")
        assert [seq for _, seq, _ in receive_changes(plain, 3)] == [1, 2, 3]
        assert [rev for _, _, rev in receive_changes(by_rev, 3)] == [1, 2, 3]
        api.send(ada, chat_id, "polled", "polled-4")  # rev 4
        api.send(ada, chat_id, "polled", "polled-5")  # rev 5
        changed = touch(database_url, chat_id, 4)  # rev 6: seq 4 now comes after seq 5 by rev
        for socket, follows_seqs in ((plain, True), (by_rev, False)):
            # Whether seq 4 was polled before or after its change, the socket ends up with both
            # messages in their latest state.
            seen = receive_changes_until(
                socket, lambda got: {(s, r) for _, s, r in got} >= {(4, changed), (5, 5)}
            )
            revs = [rev for _, _, rev in seen]
            assert len(revs) == len(set(revs)), seen
            if follows_seqs:
                assert [seq for kind, seq, _ in seen if kind == "message"] == [4, 5]
            else:
                assert revs == sorted(revs)


def test_edits_reactions_and_deletes_while_polling_reach_the_sockets_once_and_live_ones_after(
    client: TestClient[Any], api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    for n in range(1, 4):
        api.send(ada, chat_id, "before", f"before-{n}")  # revs 1..3
    down = fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    base = f"/ws/{chat_id}?token={bob.token}"
    with client.websocket_connect(base) as plain, client.websocket_connect(f"{base}&after_rev=3") as by_rev:
        api.edit(ada, chat_id, 1, "edited while down")  # rev 4; its event is lost: degraded mode
        for socket in (plain, by_rev):
            assert receive_changes(socket, 4) == [("message_updated", 1, 4)]
        assert health_status(client) == "degraded"
        api.react(bob, chat_id, 2, "👍")  # rev 5
        api.delete_message(ada, chat_id, 3)  # rev 6
        api.send(ada, chat_id, "polled", "polled-4")  # rev 7
        for socket in (plain, by_rev):
            assert receive_changes(socket, 7) == [
                ("message_updated", 2, 5),
                ("message_updated", 3, 6),
                ("message", 4, 7),
            ]
        down.clear()
        wait_for(lambda: health_status(client) == "ok", interval=0.1)
        api.edit(ada, chat_id, 4, "edited live")  # rev 8: live again, once, and nothing in between
        for socket in (plain, by_rev):
            assert receive_changes(socket, 8) == [("message_updated", 4, 8)]


def test_a_socket_that_reconnects_by_rev_during_the_outage_replays_then_gets_polled_changes_once(
    client: TestClient[Any], api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.private_chat(ada, bob)["id"]
    for n in range(1, 4):
        api.send(ada, chat_id, "before", f"before-{n}")  # revs 1..3
    fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    base = f"/ws/{chat_id}?token={bob.token}"
    with client.websocket_connect(base) as plain:
        api.edit(ada, chat_id, 1, "edited while down")  # rev 4, polled
        assert receive_changes(plain, 4) == [("message_updated", 1, 4)]
        assert health_status(client) == "degraded"
        api.react(bob, chat_id, 3, "👍")  # rev 5
        with client.websocket_connect(f"{base}&after_rev=2") as by_rev:
            api.edit(ada, chat_id, 3, "edited after the reconnect")  # rev 6
            api.send(ada, chat_id, "polled", "polled-4")  # rev 7
            seen = receive_changes(by_rev, 7)
            # The replay read before or after the reaction was polled, and before or after the edit of
            # 3: either way each rev at most once, in rev order, ending with every message's latest.
            revs = [rev for _, _, rev in seen]
            assert revs == sorted(set(revs)), seen
            assert {seq: rev for _, seq, rev in seen} == {1: 4, 3: 6, 4: 7}, seen


@pytest.mark.parametrize("catch_up", ["", "&after_rev=1"])
def test_while_polling_a_removed_members_sockets_get_nothing_written_after_the_removal(
    client: TestClient[Any], api: Api, monkeypatch: pytest.MonkeyPatch, catch_up: str
) -> None:
    ada, bob = api.people("Ada", "Bob")
    chat_id = api.group(ada, "Garden", [bob])["id"]
    api.send(ada, chat_id, "before", "before-1")  # rev 1
    down = fail_always(monkeypatch, guarded_inner_backend(client.app), "publish")
    with client.websocket_connect(f"/ws/{chat_id}?token={bob.token}{catch_up}") as socket:
        api.edit(ada, chat_id, 1, "edited while down")  # rev 2, polled: the socket is in degraded mode
        assert receive_changes(socket, 2) == [("message_updated", 1, 2)]
        api.remove_member(ada, chat_id, bob)
        api.send(ada, chat_id, "after the removal", "after-1")
        api.edit(ada, chat_id, 1, "edited after the removal")
        seen, code = frames_until_closed(socket)
        assert code == 4403
        assert [frame["type"] for frame in seen if frame["type"] != "read"] == ["member_removed"]
    down.clear()
