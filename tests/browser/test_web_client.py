"""The built-in web client in a real browser, against a real server: what a person sees and does."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import WebSocket, expect

from tests.api import Api
from tests.browser.person import Person
from tests.conftest import LiveServer

MakePerson = Callable[..., Person]
HOSTILE = "<img src=x onerror=alert(1)>"


def chatting(person: MakePerson) -> tuple[Person, Person]:
    """Ada and Bob registered in their own browsers, with their private chat open on both."""
    ada = person("Ada").register()
    bob = person("Bob").register()
    ada.start_chat_with(bob)
    expect(bob.inbox_item(ada.name)).to_be_visible()
    bob.open_chat(ada.name)
    ada.wait_until_connected()
    bob.wait_until_connected()
    return ada, bob


def test_two_people_find_each_other_chat_live_and_see_read_ticks(person: MakePerson) -> None:
    ada = person("Ada").register()
    bob = person("Bob").register()
    ada.start_chat_with(bob)
    ada.send("Hello Bob!")
    expect(ada.message("Hello Bob!").locator(".tick")).to_have_text("✓")

    # Bob's inbox picks the chat up with its last message and an unread badge.
    item = bob.inbox_item(ada.name)
    expect(item.locator(".badge")).to_have_text("1")
    expect(item.locator(".preview")).to_have_text("Hello Bob!")
    bob.screenshot("inbox")

    bob.open_chat(ada.name)
    expect(bob.texts).to_have_text(["Hello Bob!"])
    expect(ada.message("Hello Bob!").locator(".tick")).to_have_text("✓✓")

    bob.send("Hi Ada")
    expect(ada.texts).to_have_text(["Hello Bob!", "Hi Ada"])
    expect(bob.message("Hi Ada").locator(".tick")).to_have_text("✓✓")
    ada.screenshot("chat")


def test_typing_shows_to_the_other_person(person: MakePerson) -> None:
    ada, bob = chatting(person)
    bob.composer.press_sequentially("Hel")
    expect(ada.page.locator(".typing")).to_have_text(f"{bob.name} is typing…")


def test_a_hostile_message_renders_as_text(person: MakePerson) -> None:
    ada, bob = chatting(person)
    ada.send(HOSTILE)
    expect(bob.texts).to_have_text([HOSTILE])
    expect(ada.message(HOSTILE).locator(".tick")).to_have_text("✓✓")
    assert bob.page.locator(".messages img").count() == 0
    assert ada.dialogs == []
    assert bob.dialogs == []
    expect(bob.inbox_item(ada.name).locator(".preview")).to_have_text(HOSTILE)


def test_enter_sends_and_shift_enter_makes_a_new_line(person: MakePerson) -> None:
    ada, bob = chatting(person)
    ada.composer.press_sequentially("first line")
    ada.composer.press("Shift+Enter")
    ada.composer.press_sequentially("second line")
    expect(ada.texts).to_have_count(0)
    ada.composer.press("Enter")
    expect(bob.texts).to_have_text(["first line\nsecond line"])
    expect(ada.composer).to_have_value("")


def test_after_the_network_drops_everything_arrives_once_in_order(person: MakePerson) -> None:
    ada, bob = chatting(person)
    ada.send("before")
    expect(bob.texts).to_have_text(["before"])

    bob.context.set_offline(True)
    expect(bob.status).to_have_text("Reconnecting…")
    for text in ("one", "two", "three"):
        ada.send(text)
    bob.send("sent while offline")
    expect(ada.texts).to_have_text(["before", "one", "two", "three"])
    bob.screenshot("reconnecting")

    bob.context.set_offline(False)
    expect(bob.status).to_be_hidden()
    everything = ["before", "one", "two", "three", "sent while offline"]
    expect(bob.texts).to_have_text(everything)
    expect(ada.texts).to_have_text(everything)
    expect(bob.message("sent while offline").locator(".tick")).to_have_text("✓✓")
    assert bob.page.locator(".message.pending").count() == 0


def test_a_session_outlives_its_access_tokens_on_one_socket(
    person: MakePerson, short_token_server: LiveServer
) -> None:
    ada = person("Ada", server=short_token_server).register()
    bob = person("Bob", server=short_token_server).register()
    sockets: list[WebSocket] = []
    ada.page.on("websocket", lambda socket: sockets.append(socket))
    ada.start_chat_with(bob)
    expect(bob.inbox_item(ada.name)).to_be_visible()
    bob.open_chat(ada.name)

    # Each refresh spends the refresh token and renews the open socket in-band; three of them take
    # the session well past the first access token's life.
    for _ in range(3):
        with ada.page.expect_response("**/token/refresh", timeout=20_000) as refreshed:
            pass
        assert refreshed.value.status == 200
    bob.send("still there?")
    expect(ada.texts).to_have_text(["still there?"])
    expect(bob.message("still there?").locator(".tick")).to_have_text("✓✓")
    assert len(sockets) == 1
    assert not sockets[0].is_closed()


def test_the_inbox_shows_the_most_recent_chat_first_with_its_unread_count(
    person: MakePerson, rest: Api
) -> None:
    ada = person("Ada")
    me = rest.account(ada.name, ada.email)
    bob, cid = (
        rest.account(ada.name.replace("Ada", other), f"{other.lower()}-of-{ada.email}")
        for other in ("Bob", "Cid")
    )
    with_bob = rest.private_chat(me, bob)
    with_cid = rest.private_chat(me, cid)
    rest.send(cid, with_cid["id"], "from Cid")
    rest.send(bob, with_bob["id"], "from Bob")
    ada.log_in(ada.email)
    expect(ada.page.locator(".chat-item .title")).to_have_text([bob.name, cid.name])

    rest.send(cid, with_cid["id"], "Cid again")
    expect(ada.page.locator(".chat-item .title")).to_have_text([cid.name, bob.name])
    expect(ada.inbox_item(cid.name).locator(".badge")).to_have_text("2")
    expect(ada.inbox_item(cid.name).locator(".preview")).to_have_text("Cid again")


def test_older_messages_load_when_scrolling_up(person: MakePerson, rest: Api) -> None:
    ada = person("Ada")
    bob = rest.account(ada.name.replace("Ada", "Bob"), f"bob-of-{ada.email}")
    chat = rest.private_chat(rest.account(ada.name, ada.email), bob)
    for number in range(1, 71):
        rest.send(bob, chat["id"], f"message {number}")
    ada.log_in(ada.email)
    ada.open_chat(bob.name)
    expect(ada.texts.last).to_have_text("message 70")
    expect(ada.texts).to_have_count(50)

    ada.texts.first.scroll_into_view_if_needed()
    ada.page.locator(".messages").evaluate("list => { list.scrollTop = 0; }")
    expect(ada.texts).to_have_count(70)
    expect(ada.texts.first).to_have_text("message 1")


def test_a_group_owner_adds_and_removes_members(person: MakePerson) -> None:
    ada = person("Ada").register()
    bob = person("Bob").register()
    cid = person("Cid").register()

    ada.page.get_by_role("button", name="New group").click()
    dialog = ada.page.locator("#group-dialog")
    dialog.get_by_label("Name").fill("Trip")
    dialog.get_by_label("Add people to the group").fill(bob.name)
    dialog.locator(".person", has_text=bob.name).click()
    dialog.get_by_role("button", name="Create").click()
    expect(ada.title).to_have_text("Trip")
    ada.send("Welcome!")

    bob.open_chat("Trip")
    expect(bob.texts).to_have_text(["Welcome!"])

    ada.page.get_by_role("button", name="Members").click()
    members = ada.page.locator(".member-list")
    ada.page.get_by_label("Add people", exact=True).fill(cid.name)
    ada.page.locator(".members .people li", has_text=cid.name).get_by_role("button", name="Add").click()
    expect(members).to_contain_text(cid.name)
    cid.open_chat("Trip")
    expect(cid.texts).to_have_text(["Welcome!"])

    members.locator("li", has_text=bob.name).get_by_role("button", name="Remove").click()
    expect(members).not_to_contain_text(bob.name)
    expect(bob.page.locator(".notice")).to_have_text("You are no longer a member of this chat.")
    expect(bob.composer).to_be_hidden()


def test_the_session_survives_a_reload_and_logging_out_ends_it(person: MakePerson) -> None:
    ada = person("Ada").register()
    assert ada.evaluate("document.cookie") == ""
    # The refresh token is kept in sessionStorage only while the page is being left for a reload.
    assert ada.evaluate("sessionStorage.length") == 0
    ada.page.reload()
    expect(ada.page.locator("#me-name")).to_have_text(ada.name)

    ada.page.get_by_role("button", name="Log out").click()
    expect(ada.page.locator("#auth-view")).to_be_visible()
    assert ada.evaluate("sessionStorage.length") == 0
    ada.page.reload()
    expect(ada.page.locator("#auth-view")).to_be_visible()
    expect(ada.page.locator("#chat-app")).to_be_hidden()


def test_a_phone_sized_screen_shows_one_pane_at_a_time(person: MakePerson) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    ada = person("Ada", **phone).register()
    bob = person("Bob").register()
    ada.start_chat_with(bob)
    expect(ada.page.locator(".sidebar")).to_be_hidden()
    ada.send("from my phone")
    expect(ada.message("from my phone").locator(".tick")).to_have_text("✓")
    ada.screenshot("phone-chat")
    ada.page.get_by_role("button", name="Back to chats").click()
    expect(ada.inbox_item(bob.name)).to_be_visible()
    assert ada.evaluate("document.documentElement.scrollWidth") <= 390


def test_the_page_is_served_with_a_strict_content_security_policy(person: MakePerson) -> None:
    ada = person("Ada")
    response = ada.page.goto(ada.base_url + "/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert re.search(r"script-src 'self'(;|$)", policy)
    assert "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
