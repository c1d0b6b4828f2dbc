"""One person using the web client in a browser context of their own, in the words of the page."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, ConsoleMessage, Locator, expect

from tests.api import PASSWORD

# Screenshots for a person to look at (linked from the README); the repository ignores this directory.
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"

# Names and addresses unique within the run: every browser test shares one server and database.
_unique = itertools.count(1)


class Person:
    """A page of the web client and what a person does on it."""

    def __init__(self, context: BrowserContext, base_url: str, name: str) -> None:
        self.context = context
        self.base_url = base_url
        number = next(_unique)
        self.name = f"{name} {number}"
        self.email = f"{name.lower()}-web-{number}-{id(self)}@example.com"
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)
        self.page.goto(base_url + "/")

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    # Signing in -----------------------------------------------------------------------------------

    def register(self) -> Person:
        form = self.page.locator("#register-form")
        form.get_by_label("Name").fill(self.name)
        form.get_by_label("Email").fill(self.email)
        form.get_by_label("Password").fill(PASSWORD)
        form.get_by_role("button", name="Register").click()
        expect(self.page.locator("#me-name")).to_have_text(self.name)
        return self

    def log_in(self, email: str, password: str = PASSWORD) -> Person:
        form = self.page.locator("#login-form")
        form.get_by_label("Email").fill(email)
        form.get_by_label("Password").fill(password)
        form.get_by_role("button", name="Log in").click()
        expect(self.page.locator("#chat-app")).to_be_visible()
        return self

    # Chats ----------------------------------------------------------------------------------------

    def start_chat_with(self, other: Person) -> None:
        """Find the other person by name and open the private chat with them."""
        self.page.get_by_label("Find people").fill(other.name)
        self.page.locator("#people-results .person", has_text=other.name).click()
        expect(self.title).to_have_text(other.name)

    def inbox_item(self, title: str) -> Locator:
        return self.page.locator(".chat-item", has_text=title)

    def open_chat(self, title: str) -> None:
        self.inbox_item(title).click()
        expect(self.title).to_have_text(title)

    def wait_until_connected(self) -> None:
        """Until the open chat's socket is open: live frames reach it from now on."""
        expect(self.page.locator(".chat-view")).to_have_attribute("data-connection", "open")

    @property
    def title(self) -> Locator:
        return self.page.locator(".chat-title")

    # Messages -------------------------------------------------------------------------------------

    @property
    def composer(self) -> Locator:
        return self.page.get_by_label("Message", exact=True)

    def send(self, text: str) -> None:
        self.composer.fill(text)
        self.composer.press("Enter")

    @property
    def texts(self) -> Locator:
        """The text of every message shown, stored or on its way."""
        return self.page.locator(".messages .message .text")

    def message(self, text: str) -> Locator:
        return self.page.locator(".messages .message", has=self.page.locator(".text", has_text=text))

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{name}.png")

    def evaluate(self, script: str) -> Any:
        return self.page.evaluate(script)
