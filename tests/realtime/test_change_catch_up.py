"""Reconnecting with ``after_rev``: every message changed since, once and in rev order, then live events."""

from __future__ import annotations

import random
import threading
from typing import Any

from litestar.testing import TestClient

from tests.api import Api
from tests.conftest import LiveServer, fetch, insert_messages, make_settings, touch, wait_for
from tests.realtime.test_catch_up import _in_process_chat, message_rows_read
from tests.wsclient import (
    Frame,
    is_message,
    is_type,
    open_socket,
    receive_count,
    receive_until,
    receive_until_closed,
)
from windi_chat.app import create_app
from windi_chat.catch_up import CATCH_UP_PAGE
from windi_chat.config import Settings

CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403


CATCH_UP_LIMIT = Settings().ws_catch_up_limit  # what the shared server runs with


def changes_in(frames: list[Frame]) -> list[tuple[str, int, int]]:
    """``(frame type, seq, rev)`` of the message and message_updated frames among ``frames``."""
    return [
        (f["type"], f["message"]["seq"], f["message"]["rev"])
        for f in frames
        if f["type"] in ("message", "message_updated")
    ]


def rev_of(frame: Frame) -> int:
    rev: int = frame["message"]["rev"] if frame["type"] in ("message", "message_updated") else -1
    return rev


def last_rev(database_url: str, chat_id: int) -> int:
    rev: int = fetch(database_url, "SELECT last_rev FROM chats WHERE id = :c", c=chat_id)[0][0]
    return rev


def stored_revs(database_url: str, chat_id: int) -> list[int]:
    return [
        rev
        for (rev,) in fetch(
            database_url, "SELECT rev FROM messages WHERE chat_id = :c ORDER BY rev", c=chat_id
        )
    ]


def test_after_rev_replays_what_changed_in_rev_order_then_live_events(
    rest: Api, connect: Any, shared_database_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    sent = [rest.send(ada, chat_id, "hi", f"m{n}") for n in range(1, 6)]
    held = sent[2]["rev"]
    changed = touch(shared_database_url, chat_id, 2)  # a message the client holds changed since
    feed = rest.changes(bob, chat_id, after_rev=held)

    bob_socket = connect(chat_id, bob.token, after_rev=held)
    live = rest.send(ada, chat_id, "hi", "m6")

    frames = receive_until(bob_socket, is_message(seq=6))
    assert changes_in(frames) == [
        ("message", 4, sent[3]["rev"]),
        ("message", 5, sent[4]["rev"]),
        ("message", 2, changed),
        ("message", 6, live["rev"]),
    ]
    assert [f["message"] for f in frames[:3]] == feed  # the replay is the change feed


def test_a_client_that_holds_the_last_rev_gets_only_live_events(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    last = rest.send(ada, chat_id, "hi", "m1")["rev"]
    bob_socket = connect(chat_id, bob.token, after_rev=last)
    rest.send(ada, chat_id, "hi", "m2")
    assert changes_in(receive_until(bob_socket, is_message(seq=2))) == [("message", 2, last + 1)]


def test_catch_up_by_rev_has_no_gap_or_duplicate_while_messages_keep_arriving(
    rest: Api, shared_server: LiveServer, shared_database_url: str, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    sent: list[int] = []

    def keep_sending() -> None:
        with shared_server.http() as http:
            for n in range(1, 61):
                sent.append(Api(http).send(ada, chat_id, "hi", f"m{n}")["rev"])

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_for(lambda: len(sent) >= 10 or not sender.is_alive())
        bob_socket = connect(chat_id, bob.token, after_rev=3)
    finally:
        sender.join()

    revs = [rev for _, _, rev in changes_in(receive_until(bob_socket, is_message(seq=60)))]
    assert revs == [rev for rev in stored_revs(shared_database_url, chat_id) if rev > 3]


def test_reconnecting_with_the_last_rev_held_sees_each_change_once_in_rev_order(
    rest: Api, shared_server: LiveServer, shared_database_url: str
) -> None:
    """A client that drops its socket again and again, and reconnects with the rev it holds, while
    messages are sent: across all its sockets, every change once, in rev order.
    """
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    done = threading.Event()

    def keep_changing() -> None:
        with shared_server.http() as http:
            api = Api(http)
            for n in range(1, 61):
                api.send(ada, chat_id, "hi", f"m{n}")
        done.set()

    sender = threading.Thread(target=keep_changing)
    sender.start()
    seen: list[tuple[str, int, int]] = []
    try:
        while True:
            finished = done.is_set()
            held = seen[-1][2] if seen else 0
            with open_socket(
                shared_server.ws_url, chat_id, bob.token, after_rev=held, max_queue=None
            ) as socket:
                # Whatever changed by now comes, in the replay or live, up to the chat's last rev.
                target = last_rev(shared_database_url, chat_id)
                if target > held:
                    seen += changes_in(receive_until(socket, lambda f, t=target: rev_of(f) >= t))
            if finished and (seen[-1][2] if seen else 0) >= target:
                break
    finally:
        sender.join()

    revs = [rev for _, _, rev in seen]
    assert revs == stored_revs(shared_database_url, chat_id)


def test_after_seq_and_after_rev_together_are_refused_with_4400(rest: Api, shared_server: LiveServer) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    with open_socket(shared_server.ws_url, chat_id, bob.token, after_seq=0, after_rev=0) as socket:
        assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST)


def test_a_bad_after_rev_is_refused_with_4400(rest: Api, shared_server: LiveServer) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    for bad in ("-1", "x", "", "1.5", "\u00b2", str(2**63), "1" * 30):
        with open_socket(shared_server.ws_url, chat_id, bob.token, after_rev=bad) as socket:
            assert receive_until_closed(socket) == ([], CLOSE_BAD_REQUEST), bad


def test_too_many_changes_to_replay_get_a_resync_frame_with_revs_and_the_socket_stays_live(
    rest: Api, connect: Any, shared_database_url: str
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    insert_messages(shared_database_url, chat_id, ada.id, [f"old {n}" for n in range(1, CATCH_UP_LIMIT + 6)])
    last_rev = CATCH_UP_LIMIT + 5

    bob_socket = connect(chat_id, bob.token, after_rev=4)
    first = receive_until(bob_socket, lambda _frame: True)
    rest.send(ada, chat_id, "hi", "live")

    assert first == [{"type": "resync", "after_rev": 4, "last_rev": last_rev}]
    assert changes_in(receive_until(bob_socket, is_type("message"))) == [
        ("message", last_rev + 1, last_rev + 1)
    ]
    # Exactly at the limit, the replay goes ahead.
    at_limit = connect(chat_id, bob.token, after_rev=last_rev + 1 - CATCH_UP_LIMIT)
    replayed = receive_count(at_limit, is_type("message"), CATCH_UP_LIMIT)
    assert [rev for _, _, rev in changes_in(replayed)] == list(
        range(last_rev + 2 - CATCH_UP_LIMIT, last_rev + 2)
    )


def test_after_rev_beyond_the_last_rev_gets_a_resync_and_live_events_still_come(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.send(ada, chat_id, "hi", "one")

    bob_socket = connect(chat_id, bob.token, after_rev=50)
    first = receive_until(bob_socket, lambda _frame: True)
    rest.send(ada, chat_id, "hi", "two")

    assert first == [{"type": "resync", "after_rev": 50, "last_rev": 1}]
    assert changes_in(receive_until(bob_socket, is_type("message"))) == [("message", 2, 2)]


def test_deciding_on_a_resync_by_rev_reads_no_message_rows(database_url: str) -> None:
    app, _ada, bob, chat_id = _in_process_chat(database_url, CATCH_UP_LIMIT + 5)
    url = f"/ws/{chat_id}?token={bob.token}&after_rev=4"
    with (
        TestClient(app=app) as client,
        message_rows_read() as counts,
        client.websocket_connect(url) as socket,
    ):
        assert socket.receive_json(timeout=10) == {"type": "resync", "after_rev": 4, "last_rev": 1005}
    assert counts == []


def test_a_catch_up_by_rev_is_read_a_page_at_a_time(database_url: str) -> None:
    app, _ada, bob, chat_id = _in_process_chat(database_url, CATCH_UP_PAGE * 2 + 50)
    url = f"/ws/{chat_id}?token={bob.token}&after_rev=0"
    with (
        TestClient(app=app) as client,
        message_rows_read() as counts,
        client.websocket_connect(url) as socket,
    ):
        revs = [socket.receive_json(timeout=10)["message"]["rev"] for _ in range(CATCH_UP_PAGE * 2 + 50)]
    assert revs == list(range(1, CATCH_UP_PAGE * 2 + 51))
    assert counts == [CATCH_UP_PAGE, CATCH_UP_PAGE, 50]


def test_the_catch_up_limit_is_a_setting_for_both_kinds_of_catch_up(database_url: str) -> None:
    app = create_app(make_settings(database_url, ws_catch_up_limit=3))
    with TestClient(app=app) as client:
        api = Api(client)
        ada, bob = api.people("Ada", "Bob")
        chat_id = api.private_chat(ada, bob)["id"]
        for n in range(1, 6):
            api.send(ada, chat_id, "hi", f"m{n}")  # seqs and revs 1..5
        base = f"/ws/{chat_id}?token={bob.token}"
        with client.websocket_connect(f"{base}&after_rev=2") as socket:  # 3 revs: at the limit
            assert [socket.receive_json(timeout=10)["message"]["rev"] for _ in range(3)] == [3, 4, 5]
        with client.websocket_connect(f"{base}&after_rev=1") as socket:
            assert socket.receive_json(timeout=10) == {"type": "resync", "after_rev": 1, "last_rev": 5}
        with client.websocket_connect(f"{base}&after_seq=1") as socket:
            assert socket.receive_json(timeout=10) == {"type": "resync", "after_seq": 1, "last_seq": 5}


def test_a_removed_member_following_revs_is_cut_off_and_cannot_catch_up_again(
    rest: Api, connect: Any, shared_server: LiveServer
) -> None:
    owner, member = rest.people("Owner", "Member")
    chat_id = rest.group(owner, "Team", [member])["id"]
    held = rest.send(owner, chat_id, "hi", "before")["rev"]
    member_socket = connect(chat_id, member.token, after_rev=held)

    rest.remove_member(owner, chat_id, member)
    rest.send(owner, chat_id, "hi", "after")

    frames, code = receive_until_closed(member_socket)
    assert code == CLOSE_FORBIDDEN
    assert changes_in(frames) == []
    with open_socket(shared_server.ws_url, chat_id, member.token, after_rev=held) as again:
        assert receive_until_closed(again) == ([], CLOSE_FORBIDDEN)


# With edits, reactions and deletes -------------------------------------------------------------------


def test_after_rev_replays_edits_reactions_and_deletes_then_live_changes(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    held = [rest.send(ada, chat_id, "hi", f"m{n}") for n in range(1, 5)][-1]["rev"]
    rest.edit(ada, chat_id, 1, "edited")
    rest.react(bob, chat_id, 2, "👍")
    rest.delete_message(ada, chat_id, 3)
    feed = rest.changes(bob, chat_id, after_rev=held)

    bob_socket = connect(chat_id, bob.token, after_rev=held)
    rest.edit(ada, chat_id, 4, "edited live")

    frames = receive_until(bob_socket, is_type("message_updated"))
    assert changes_in(frames) == [
        ("message", 1, held + 1),
        ("message", 2, held + 2),
        ("message", 3, held + 3),
        ("message_updated", 4, held + 4),
    ]
    assert [f["message"] for f in frames[:3]] == feed
    assert (frames[2]["message"]["deleted"], frames[2]["message"]["text"]) == (True, "")
    assert frames[3]["message"]["text"] == "edited live"


def test_reconnecting_with_the_last_rev_held_sees_each_edit_reaction_and_delete_once_in_rev_order(
    rest: Api, shared_server: LiveServer, shared_database_url: str
) -> None:
    """Sends, edits, reactions and deletes keep coming while a client drops its socket again and again
    and reconnects with the rev it holds. Across its sockets every rev comes at most once, in rev order,
    and it ends with every message in its current state; only changes made while it was away and
    overtaken by a later change of the same message are folded into that one.
    """
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    done = threading.Event()

    def keep_changing() -> None:
        choose = random.Random(15)
        deleted: set[int] = set()
        with shared_server.http() as http:
            api = Api(http)
            for n in range(1, 31):
                api.send(ada, chat_id, "hi", f"m{n}")
                for _ in range(2):
                    seq = choose.randint(1, n)
                    action = choose.choice(("edit", "react", "unreact", "delete"))
                    if seq in deleted:
                        continue
                    if action == "edit":
                        api.edit(ada, chat_id, seq, f"edit {n}")
                    elif action == "delete" and choose.random() < 0.3:
                        api.delete_message(ada, chat_id, seq)
                        deleted.add(seq)
                    else:
                        api.react(bob, chat_id, seq, choose.choice("👍🎉"), on=action == "react")
        done.set()

    changer = threading.Thread(target=keep_changing)
    changer.start()
    seen: list[Frame] = []
    try:
        while True:
            finished = done.is_set()
            held = rev_of(seen[-1]) if seen else 0
            with open_socket(
                shared_server.ws_url, chat_id, bob.token, after_rev=held, max_queue=None
            ) as socket:
                target = last_rev(shared_database_url, chat_id)
                if target > held:
                    frames = receive_until(socket, lambda f, t=target: rev_of(f) >= t)
                    seen += [f for f in frames if rev_of(f) >= 0]
            if finished and (rev_of(seen[-1]) if seen else 0) >= target:
                break
    finally:
        changer.join()

    revs = [rev_of(frame) for frame in seen]
    assert revs == sorted(set(revs)), "a change came twice or out of order"
    held_now = {frame["message"]["seq"]: frame["message"] for frame in seen}
    assert held_now == {message["seq"]: message for message in rest.history(bob, chat_id, limit=200)}


def test_a_removed_member_following_revs_hears_no_change_after_the_removal(rest: Api, connect: Any) -> None:
    owner, member, other = rest.people("Owner", "Member", "Other")
    chat_id = rest.group(owner, "Team", [member, other])["id"]
    held = rest.send(owner, chat_id, "hi", "before")["rev"]
    member_socket = connect(chat_id, member.token, after_rev=held)
    other_socket = connect(chat_id, other.token, after_rev=held)

    rest.remove_member(owner, chat_id, member)
    rest.edit(owner, chat_id, 1, "edited after the removal")
    rest.react(owner, chat_id, 1, "👍")

    frames, code = receive_until_closed(member_socket)
    assert code == CLOSE_FORBIDDEN
    assert changes_in(frames) == []
    assert changes_in(receive_count(other_socket, is_type("message_updated"), 2)) == [
        ("message_updated", 1, held + 1),
        ("message_updated", 1, held + 2),
    ]
