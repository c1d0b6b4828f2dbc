"""Edits, deletes and reactions over the socket, and ``message_updated`` on every member's sockets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from websockets.sync.client import ClientConnection

from tests.api import Account, Api
from tests.conftest import LiveServer, fetch
from tests.wsclient import (
    Frame,
    is_message,
    is_type,
    open_socket,
    receive_count,
    receive_until,
    receive_until_closed,
    send_and_confirm,
    send_frame,
)

CLOSE_FORBIDDEN = 4403


def is_update(seq: int | None = None, rev: int | None = None) -> Callable[[Frame], bool]:
    def matches(frame: Frame) -> bool:
        if frame.get("type") != "message_updated":
            return False
        message = frame["message"]
        return (seq is None or message["seq"] == seq) and (rev is None or message["rev"] == rev)

    return matches


def is_answered(frame: Frame) -> bool:
    return frame.get("type") in ("ack", "error")


def is_answer(client_id: str) -> Callable[[Frame], bool]:
    """The ack or the error frame that answers the frame sent with ``client_id``."""
    return lambda frame: is_answered(frame) and frame.get("client_id") == client_id


def exchange(socket: ClientConnection, **frame: Any) -> list[Frame]:
    """Send a frame with a client id; every frame received up to what answers it, that one last."""
    send_frame(socket, **frame)
    return receive_until(socket, is_answer(frame["client_id"]))


def answer(socket: ClientConnection, **frame: Any) -> Frame:
    """Send a frame with a client id and return what answers it."""
    return exchange(socket, **frame)[-1]


def history_message(rest: Api, account: Account, chat_id: int, seq: int) -> dict[str, Any]:
    return next(m for m in rest.history(account, chat_id) if m["seq"] == seq)


def pair_with_message(
    rest: Api, connect: Any
) -> tuple[Account, Account, int, ClientConnection, dict[str, Any]]:
    """Ada and Bob, their chat, Ada's socket on it and one message of hers (seq 1)."""
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    socket = connect(chat_id, ada.token)
    return ada, bob, chat_id, socket, send_and_confirm(socket, "first", "Hello")


# Frames and their answers -------------------------------------------------------------------------


def test_an_edit_is_acked_with_the_message_and_every_members_socket_gets_message_updated(
    rest: Api, connect: Any
) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    ada_phone, ada_laptop = connect(chat_id, ada.token), connect(chat_id, ada.token)
    bob_phone, bob_laptop = connect(chat_id, bob.token), connect(chat_id, bob.token)
    sent = send_and_confirm(ada_phone, "first", "Helo")

    exchanged = exchange(ada_phone, type="edit", seq=sent["seq"], text=" Hello ", client_id="edit-1")
    ack = exchanged[-1]

    assert ack["type"] == "ack"
    edited = ack["message"]
    assert (edited["text"], edited["seq"], edited["rev"] > sent["rev"]) == ("Hello", sent["seq"], True)
    assert edited["edited_at"] is not None
    for socket in (ada_laptop, bob_phone, bob_laptop):
        frame = receive_until(socket, is_update(sent["seq"]))[-1]
        assert frame == {"type": "message_updated", "message": edited}
    # The changing socket hears of its change too, before or after the ack.
    if not any(map(is_update(sent["seq"]), exchanged)):
        exchanged += receive_until(ada_phone, is_update(sent["seq"]))
    assert {"type": "message_updated", "message": edited} in exchanged
    assert history_message(rest, bob, chat_id, sent["seq"]) == edited


def test_an_ack_without_a_client_id_carries_none(rest: Api, connect: Any) -> None:
    _ada, _bob, _chat_id, socket, sent = pair_with_message(rest, connect)

    send_frame(socket, type="edit", seq=sent["seq"], text="Edited")
    ack = receive_until(socket, is_type("ack"))[-1]

    assert set(ack) == {"type", "message"}
    assert ack["message"]["text"] == "Edited"


def test_a_delete_frame_is_acked_with_the_tombstone(rest: Api, connect: Any) -> None:
    _ada, bob, chat_id, socket, sent = pair_with_message(rest, connect)
    bob_socket = connect(chat_id, bob.token)

    ack = answer(socket, type="delete", seq=sent["seq"], client_id="del-1")

    tombstone = ack["message"]
    assert (tombstone["deleted"], tombstone["text"], tombstone["seq"]) == (True, "", sent["seq"])
    assert receive_until(bob_socket, is_update(sent["seq"]))[-1]["message"] == tombstone
    assert answer(socket, type="delete", seq=sent["seq"], client_id="del-2") == {
        "type": "ack",
        "client_id": "del-2",
        "message": tombstone,
    }


def test_react_frames_add_and_take_back_and_a_repeat_announces_nothing(rest: Api, connect: Any) -> None:
    ada, bob, chat_id, socket, sent = pair_with_message(rest, connect)
    bob_socket, watcher = connect(chat_id, bob.token), connect(chat_id, ada.token)
    seq = sent["seq"]

    on = answer(bob_socket, type="react", seq=seq, emoji="👍", on=True, client_id="r1")["message"]
    assert on["reactions"] == [{"emoji": "👍", "user_ids": [bob.id]}]
    again = answer(bob_socket, type="react", seq=seq, emoji="👍", on=True, client_id="r2")["message"]
    assert again == on
    off = answer(bob_socket, type="react", seq=seq, emoji="👍", on=False, client_id="r3")["message"]
    assert (off["reactions"], off["rev"]) == ([], on["rev"] + 1)
    send_and_confirm(socket, "sentinel")

    frames = receive_until(watcher, is_message(client_id="sentinel"))
    assert [f["message"]["rev"] for f in frames if f["type"] == "message_updated"] == [on["rev"], off["rev"]]
    assert history_message(rest, ada, chat_id, seq)["reactions"] == []


def test_changes_over_rest_reach_the_sockets(rest: Api, connect: Any) -> None:
    ada, bob, chat_id, socket, sent = pair_with_message(rest, connect)

    edited = rest.edit(ada, chat_id, sent["seq"], "Over REST")
    rest.react(bob, chat_id, sent["seq"], "🎉")

    assert receive_until(socket, is_update(rev=edited["rev"]))[-1]["message"] == edited
    reacted = receive_until(socket, is_update(rev=edited["rev"] + 1))[-1]["message"]
    assert reacted == history_message(rest, ada, chat_id, sent["seq"])


def test_refused_changes_get_error_frames_with_their_client_id_and_the_socket_stays_open(
    rest: Api, connect: Any
) -> None:
    ada, bob, chat_id, ada_socket, sent = pair_with_message(rest, connect)
    bob_socket = connect(chat_id, bob.token)
    seq = sent["seq"]

    def error(socket: ClientConnection, **frame: Any) -> tuple[str, str | None]:
        reply = answer(socket, **frame)
        assert reply["type"] == "error", reply
        return reply["code"], reply.get("client_id")

    assert error(bob_socket, type="edit", seq=seq, text="mine", client_id="e1") == ("forbidden", "e1")
    assert error(bob_socket, type="delete", seq=seq, client_id="e2") == ("forbidden", "e2")
    assert error(ada_socket, type="edit", seq=seq + 50, text="x", client_id="e3") == ("not_found", "e3")
    assert error(ada_socket, type="edit", seq=seq, text="   ", client_id="e4") == ("invalid_frame", "e4")
    assert error(ada_socket, type="react", seq=seq, emoji="a b", on=True, client_id="e5") == (
        "invalid_frame",
        "e5",
    )
    assert error(ada_socket, type="react", seq=seq, emoji="😀" * 9, on=True, client_id="e6") == (
        "invalid_frame",
        "e6",
    )
    assert error(ada_socket, type="react", seq=seq, emoji="👍", client_id="e7") == ("invalid_frame", "e7")
    # Refused alike on both transports: REST could not carry it in a path, nor take it back.
    assert error(ada_socket, type="react", seq=seq, emoji="1/2", on=True, client_id="e8") == (
        "invalid_frame",
        "e8",
    )
    answer(ada_socket, type="delete", seq=seq, client_id="gone")
    assert error(ada_socket, type="edit", seq=seq, text="back", client_id="e8") == ("conflict", "e8")
    assert error(bob_socket, type="react", seq=seq, emoji="👍", on=True, client_id="e9") == ("conflict", "e9")

    send_and_confirm(ada_socket, "still-open")
    send_and_confirm(bob_socket, "bob-still-open")
    assert history_message(rest, ada, chat_id, seq)["deleted"] is True


def test_a_repeated_send_is_acked_with_the_message_as_it_now_is(rest: Api, connect: Any) -> None:
    ada, bob, chat_id, socket, sent = pair_with_message(rest, connect)
    answer(socket, type="edit", seq=sent["seq"], text="Edited", client_id="edit")
    rest.react(bob, chat_id, sent["seq"], "👍")

    send_frame(socket, type="send", client_id="first", text="Hello")
    ack = receive_until(socket, lambda f: f.get("type") == "ack" and f.get("client_id") == "first")[-1]

    assert ack["message"] == history_message(rest, ada, chat_id, sent["seq"])
    assert ack["message"]["reactions"] == [{"emoji": "👍", "user_ids": [bob.id]}]


def test_catch_up_replays_messages_in_their_current_state(
    rest: Api, connect: Any, shared_server: LiveServer
) -> None:
    ada, bob, chat_id, socket, sent = pair_with_message(rest, connect)
    answer(socket, type="edit", seq=sent["seq"], text="Edited", client_id="edit")
    rest.react(bob, chat_id, sent["seq"], "👍")

    with open_socket(shared_server.ws_url, chat_id, bob.token, after_seq=0) as late:
        replayed = receive_until(late, is_message(seq=sent["seq"]))[-1]["message"]

    assert replayed == history_message(rest, ada, chat_id, sent["seq"])


# Concurrency and membership -----------------------------------------------------------------------


def test_concurrent_edits_and_reactions_converge_on_every_socket_to_the_last_rev(
    rest: Api, shared_server: LiveServer, shared_database_url: str
) -> None:
    """Two of Ada's devices edit, Bob and Cy react, over sockets and REST at once: every change gets its
    own rev, an observer sees each rev once, and every socket's newest copy is the stored state.
    """
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    url = shared_server.ws_url
    with (
        open_socket(url, chat_id, ada.token, max_queue=None) as ada_phone,
        open_socket(url, chat_id, ada.token, max_queue=None) as ada_laptop,
        open_socket(url, chat_id, bob.token, max_queue=None) as bob_socket,
        open_socket(url, chat_id, cy.token, max_queue=None) as cy_socket,
        open_socket(url, chat_id, bob.token, max_queue=None) as observer,
    ):
        seq = send_and_confirm(ada_phone, "target", "Version 0")["seq"]
        start_rev = int(
            fetch(shared_database_url, "SELECT last_rev FROM chats WHERE id = :c", c=chat_id)[0][0]
        )
        start = threading.Barrier(5)
        rounds = 10

        def edits(socket: ClientConnection, device: str) -> list[Frame]:
            start.wait(timeout=10)
            for n in range(rounds):
                send_frame(socket, type="edit", seq=seq, text=f"{device} {n}", client_id=f"{device}-{n}")
            return receive_count(socket, is_answered, rounds)

        def reactions(socket: ClientConnection, person: str) -> list[Frame]:
            start.wait(timeout=10)
            for n in range(rounds):
                emoji = "👍🎉🔥"[n % 3]
                send_frame(
                    socket, type="react", seq=seq, emoji=emoji, on=n % 2 == 0, client_id=f"{person}-{n}"
                )
            return receive_count(socket, is_answered, rounds)

        def over_rest() -> None:
            start.wait(timeout=10)
            for n in range(rounds):
                rest_api.react(cy, chat_id, seq, "✅", on=n % 2 == 0)

        with shared_server.http() as http, ThreadPoolExecutor(5) as pool:
            rest_api = Api(http)
            changing = {
                ada_phone: pool.submit(edits, ada_phone, "phone"),
                ada_laptop: pool.submit(edits, ada_laptop, "laptop"),
                bob_socket: pool.submit(reactions, bob_socket, "bob"),
                cy_socket: pool.submit(reactions, cy_socket, "cy"),
            }
            pool.submit(over_rest).result()
            received = {socket: future.result() for socket, future in changing.items()}
        for frames in received.values():
            assert [f for f in frames if f["type"] == "error"] == []

        final = history_message(rest, ada, chat_id, seq)
        final_rev = int(
            fetch(shared_database_url, "SELECT last_rev FROM chats WHERE id = :c", c=chat_id)[0][0]
        )
        assert final["rev"] == final_rev
        for socket in (ada_phone, ada_laptop, bob_socket, cy_socket, observer):
            frames = received.get(socket, [])
            if not any(map(is_update(seq, final_rev), frames)):
                frames += receive_until(socket, is_update(seq, final_rev), timeout=30)
            updates = [f["message"] for f in frames if f["type"] == "message_updated"]
            newest = max(updates, key=lambda message: message["rev"])
            assert newest == final
            if socket is observer:
                assert sorted(m["rev"] for m in updates) == list(range(start_rev + 1, final_rev + 1))


def test_a_removed_members_socket_sees_no_change_after_the_removal(rest: Api, connect: Any) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    ada_socket, cy_socket = connect(chat_id, ada.token), connect(chat_id, cy.token)
    sent = send_and_confirm(ada_socket, "before", "Before")
    answer(ada_socket, type="edit", seq=sent["seq"], text="Edited before", client_id="e-before")

    rest.remove_member(ada, chat_id, cy)
    answer(ada_socket, type="edit", seq=sent["seq"], text="Edited after", client_id="e-after")
    rest.react(bob, chat_id, sent["seq"], "👍")
    answer(ada_socket, type="delete", seq=sent["seq"], client_id="d-after")

    frames, code = receive_until_closed(cy_socket)
    assert code == CLOSE_FORBIDDEN
    kinds = [f["type"] for f in frames]
    removal = kinds.index("member_removed")
    assert "message_updated" not in kinds[removal:]
    assert [f["message"]["text"] for f in frames if f["type"] == "message_updated"][-1:] == ["Edited before"]
    rest.react(cy, chat_id, sent["seq"], "👍", expect=404)
    rest.edit(cy, chat_id, sent["seq"], "x", expect=404)
