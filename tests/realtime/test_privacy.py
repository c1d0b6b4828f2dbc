"""No one learns another person's email: not from chats, members, history, search or socket frames.

Only the caller's own account (``/users/me``, and the answer to registering) shows an email.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from websockets.sync.client import ClientConnection

from tests.api import Api
from tests.conftest import LiveServer
from tests.wsclient import is_message, is_type, receive_until, send_frame


def test_no_response_or_frame_shows_another_persons_email(
    rest: Api, connect: Callable[..., ClientConnection]
) -> None:
    ada, bob, cy = rest.people("Ada", "Bob", "Cy")
    private_id = rest.private_chat(bob, ada)["id"]
    group_id = rest.group(ada, "Team", [bob])["id"]
    bob_socket = connect(group_id, bob.token)
    rest.add_member(ada, group_id, cy)
    rest.send(ada, group_id, "hello", "hello-team")
    rest.send(ada, private_id, "hi Bob", "hi-bob")
    send_frame(connect(group_id, ada.token), type="typing")
    frames = receive_until(bob_socket, is_message(client_id="hello-team"))
    frames += receive_until(bob_socket, is_type("typing"))

    seen_by_bob: list[Any] = [
        rest.chats(bob),
        rest.chat(bob, group_id),
        rest.chat(bob, private_id),
        rest.history(bob, group_id),
        rest.history(bob, private_id),
        rest.call("GET", "/users", bob, params={"search": "Ada"}, expect=200),
        rest.call("GET", "/users", bob, params={"search": ada.email.upper()}, expect=200),
        frames,
    ]
    text = json.dumps(seen_by_bob)
    assert seen_by_bob[6] == [{"id": ada.id, "name": "Ada"}]  # search by her email found her...
    assert ada.email not in text.lower()  # ...and nothing showed her address
    assert cy.email not in text.lower()
    assert "email" not in text
    assert rest.me(bob)["email"] == bob.email


def test_only_the_callers_own_account_carries_an_email_in_the_api_description(
    shared_server: LiveServer,
) -> None:
    spec = httpx.get(f"{shared_server.base_url}/docs/openapi.json", timeout=10).json()
    with_email = {
        name for name, schema in spec["components"]["schemas"].items() if "email" in json.dumps(schema)
    }
    assert with_email == {"RegisterIn", "UserOut"}
    search = spec["paths"]["/users"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert search["items"]["$ref"].endswith("/PersonOut")
