"""Text a person could not see or type is refused with 400: control characters, invisible names and texts,
and bidi overrides in names. The same rules answer the socket (tests/realtime/test_frame_inputs.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api import PASSWORD, Api

CONTROLS = ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\x85", "\x9f"]
INVISIBLE = ["\u200b", "\u200b\u200d\u200c", "\ufeff", " \u2060 ", "\u3164", "\u2800", "\u00ad", "\u180e"]
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.mark.parametrize("char", CONTROLS)
def test_a_control_character_in_a_message_is_refused(api: Api, make_account: Any, char: str) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")

    api.send(ada, chat["id"], f"hi{char}there", expect=400)
    api.send(ada, chat["id"], "hi", client_id=f"c{char}1", expect=400)

    assert api.history(ada, chat["id"]) == []


def test_newlines_and_tabs_stay_in_a_message(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")

    sent = api.send(ada, chat["id"], "line one\n\tline two")

    assert sent["text"] == "line one\n\tline two"
    assert api.history(ada, chat["id"])[0]["text"] == "line one\n\tline two"


@pytest.mark.parametrize("char", CONTROLS)
def test_a_control_character_in_a_name_email_or_search_is_refused(
    api: Api, make_account: Any, char: str
) -> None:
    ada = make_account("Ada")
    register = {"name": "Bob", "email": "bob@example.com", "password": PASSWORD}

    api.register(**{**register, "name": f"Bob{char}"}, expect=400)
    api.register(**{**register, "email": f"bob{char}@example.com"}, expect=400)
    api.group(ada, f"Team{char}", expect=400)
    api.call("GET", "/users", ada, params={"search": f"b{char}"}, expect=400)
    login = {"username": f"ada{char}@example.com", "password": PASSWORD}
    assert api.call("POST", "/login", data=login, expect=None).status_code == 400


@pytest.mark.parametrize("blank", INVISIBLE)
def test_a_name_of_invisible_characters_is_refused(api: Api, make_account: Any, blank: str) -> None:
    ada = make_account("Ada")

    api.register(name=blank, email="blank@example.com", password=PASSWORD, expect=400)
    api.group(ada, blank, expect=400)

    assert api.chats(ada) == []


@pytest.mark.parametrize("blank", INVISIBLE)
def test_a_message_of_invisible_characters_is_refused(api: Api, make_account: Any, blank: str) -> None:
    ada = make_account("Ada")
    chat = api.group(ada, "Team")

    response = api.send(ada, chat["id"], blank, expect=400)

    assert "visible" in response["detail"] + str(response.get("extra"))
    assert api.history(ada, chat["id"]) == []


@pytest.mark.parametrize("char", BIDI)
def test_a_bidi_override_in_a_name_is_refused(api: Api, make_account: Any, char: str) -> None:
    ada = make_account("Ada")

    api.register(name=f"Eve{char}evE", email="eve@example.com", password=PASSWORD, expect=400)
    api.group(ada, f"Team{char}maeT", expect=400)


def test_names_with_joiners_inside_visible_text_are_kept(api: Api, make_account: Any) -> None:
    ada = make_account("Ada")
    name = "Coders \U0001f469\u200d\U0001f4bb \u05e9\u05dc\u05d5\u05dd"

    group = api.group(ada, name)

    assert group["name"] == name
    assert api.send(ada, group["id"], "\u202eright to left, in a message")["seq"] == 1
