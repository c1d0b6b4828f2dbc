"""Group membership seen from the sockets: members hear of changes, removed members are cut off."""

from __future__ import annotations

from typing import Any

from tests.api import Api
from tests.conftest import LiveServer
from tests.reconnect_race import CLOSED_AS_REMOVED, reconnect_during_removal
from tests.wsclient import (
    is_message,
    is_type,
    messages_in,
    receive_until,
    receive_until_closed,
    send_and_confirm,
)

CLOSE_FORBIDDEN = 4403


def test_member_added_event_reaches_the_groups_sockets(rest: Api, connect: Any) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob])["id"]
    ada_socket, bob_socket = connect(chat_id, ada.token), connect(chat_id, bob.token)

    rest.add_member(ada, chat_id, cy, expect=200)

    expected = {"type": "member_added", "chat_id": chat_id, "user_id": cy.id}
    for socket in (ada_socket, bob_socket):
        assert receive_until(socket, is_type("member_added")) == [expected]


def test_added_member_can_connect_and_receives_new_messages(rest: Api, connect: Any) -> None:
    ada, cy = rest.people("Ada", "Cy")
    chat_id = rest.group(ada, "Team")["id"]
    rest.add_member(ada, chat_id, cy, expect=200)

    cy_socket = connect(chat_id, cy.token)
    rest.send(ada, chat_id, "hi", "welcome")

    assert messages_in(receive_until(cy_socket, is_type("message")))[0]["client_id"] == "welcome"


def test_removed_members_sockets_are_closed_with_4403_and_get_nothing_after_the_removal(
    rest: Api, connect: Any
) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    chat_id = rest.group(ada, "Team", [bob, cy])["id"]
    ada_socket, cy_socket = connect(chat_id, ada.token), connect(chat_id, cy.token)
    bob_phone, bob_laptop = connect(chat_id, bob.token), connect(chat_id, bob.token)

    rest.remove_member(ada, chat_id, bob, expect=200)
    send_and_confirm(ada_socket, "after-removal")

    removed = {"type": "member_removed", "chat_id": chat_id, "user_id": bob.id}
    cy_frames = receive_until(cy_socket, is_message(client_id="after-removal"))
    assert [f["type"] for f in cy_frames] == ["member_removed", "message"]
    assert cy_frames[0] == removed
    for socket in (bob_phone, bob_laptop):
        assert receive_until_closed(socket) == ([removed], CLOSE_FORBIDDEN)


def test_no_socket_of_a_member_reconnecting_during_their_removal_survives_it(
    rest: Api, shared_server: LiveServer
) -> None:
    """25 handshakes in flight while the removal commits: each one ends closed, none hears what follows."""
    fates = reconnect_during_removal(rest, shared_server.ws_url)
    assert fates
    assert [fate for fate in fates if fate != CLOSED_AS_REMOVED] == []
