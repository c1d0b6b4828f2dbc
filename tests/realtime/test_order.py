"""One server process delivers a chat's messages in seq order, whoever sends them and however."""

from __future__ import annotations

import threading
from typing import Any

from tests.api import Api
from tests.wsclient import is_message, messages_in, receive_count, send_frame

SENDERS = 4
PER_SENDER = 25


def test_concurrent_senders_are_delivered_in_seq_order(rest: Api, connect: Any) -> None:
    people = rest.people("Ada", "Bob", "Cy", "Dee", "Eve")
    owner, senders, listener = people[0], people[:SENDERS], people[SENDERS]
    chat_id = rest.group(owner, "Busy", people[1:])["id"]
    watching = connect(chat_id, listener.token)
    # Their acks and the others' messages stay unread: read on regardless, so they close at once.
    sockets = [connect(chat_id, person.token, max_queue=None) for person in senders[1:]]

    def send_all(index: int) -> None:
        # Without waiting for acks, so that sends of all senders are in flight together; one sender
        # posts over REST, the others over their sockets.
        for number in range(PER_SENDER):
            client_id = f"{index}-{number}"
            if index == 0:
                rest.send(senders[0], chat_id, "over REST", client_id)
            else:
                send_frame(sockets[index - 1], type="send", client_id=client_id, text="over the socket")

    threads = [threading.Thread(target=send_all, args=(index,)) for index in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    frames = messages_in(receive_count(watching, is_message(), SENDERS * PER_SENDER))
    assert [message["seq"] for message in frames] == list(range(1, SENDERS * PER_SENDER + 1))
