"""A deleted account's sockets close on every device; the chats it leaves hear it, and go on."""

from __future__ import annotations

from typing import Any

from tests.api import Api
from tests.wsclient import is_type, receive_until, receive_until_closed, send_and_confirm

# Losing the session (4401) or the membership (4403): either way the socket ends with the account.
ENDED = {4401, 4403}


def test_deleting_an_account_closes_its_sockets_and_tells_the_chats_it_left(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    laptop = rest.session_of(ada)
    chat_id = rest.private_chat(ada, bob)["id"]
    phone_socket = connect(chat_id, ada.token)
    laptop_socket = connect(chat_id, laptop.token)
    bob_socket = connect(chat_id, bob.token)
    send_and_confirm(phone_socket, "before")

    rest.delete_account(ada)

    assert receive_until_closed(phone_socket)[1] in ENDED
    assert receive_until_closed(laptop_socket)[1] in ENDED
    (removed,) = receive_until(bob_socket, is_type("member_removed"))[-1:]
    assert removed == {"type": "member_removed", "chat_id": chat_id, "user_id": ada.id}


def test_a_new_socket_of_a_deleted_account_is_refused_with_4401(rest: Api, connect: Any) -> None:
    ada, bob = rest.people("Ada", "Bob")
    chat_id = rest.private_chat(ada, bob)["id"]
    rest.delete_account(ada)
    assert receive_until_closed(connect(chat_id, ada.token))[1] == 4401


def test_the_group_goes_on_live_after_its_owner_deletes_their_account(rest: Api, connect: Any) -> None:
    ada, bob, cat = rest.people("Ada", "Bob", "Cat")
    group_id = rest.group(ada, "Team", [bob, cat])["id"]
    bob_socket, cat_socket = connect(group_id, bob.token), connect(group_id, cat.token)
    rest.delete_account(ada)
    receive_until(cat_socket, is_type("member_removed"))
    send_and_confirm(bob_socket, "after-deletion", "still here")
    frames = receive_until(cat_socket, is_type("message"))
    assert frames[-1]["message"]["text"] == "still here"
