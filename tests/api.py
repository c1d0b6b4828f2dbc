"""A thin driver over the chat's HTTP API, so tests read as the contract rather than as requests.

It wraps any ``httpx.Client``: Litestar's ``TestClient`` (which is one) for in-process tests, or a
plain client against a live server. Every call asserts the status the API promises for it and returns
the decoded body. A test that checks an error passes that status (``expect=404``); one that looks at
the response itself passes ``expect=None`` and gets the ``httpx.Response`` back unchecked.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ("PASSWORD", "Account", "Api", "Expect", "Person", "register_and_login")

PASSWORD = "correct horse battery"

# A status, any of several (for races where either outcome is right), or None for the raw response.
Expect = int | tuple[int, ...] | None

# Addresses and client ids unique within the test run: servers and databases outlive single tests.
_unique = itertools.count(1)


@dataclass
class Account:
    """A registered user with a real token."""

    id: int
    name: str
    email: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)
    refresh_token: str = ""

    def with_tokens(self, tokens: dict[str, Any]) -> Account:
        """The same person on the session these tokens (from login or refresh) belong to."""
        token = tokens["access_token"]
        return Account(
            self.id,
            self.name,
            self.email,
            token,
            {"Authorization": f"Bearer {token}"},
            tokens["refresh_token"],
        )


# Someone to name in a request: an account, or a bare user id (one that may not exist).
Person = Account | int


def _user_id(person: Person) -> int:
    return person if isinstance(person, int) else person.id


def _default_email(name: str) -> str:
    """The address an account gets when the test does not care: derived from the name."""
    return f"{name.lower().replace(' ', '.')}@example.com"


class Api:
    """The REST calls of the chat, each checked against the status it should answer with."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def call(
        self, method: str, path: str, account: Account | None = None, *, expect: Expect, **options: Any
    ) -> Any:
        """One request as ``account`` (anonymous when None): the body, or the response when not checked."""
        headers = account.headers if account is not None else None
        response = self.http.request(method, path, headers=headers, **options)
        if expect is None:
            return response
        allowed = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in allowed, (
            f"{method} {path}: expected {expect}, got {response.status_code}: {response.text}"
        )
        return response.json()

    # Accounts -------------------------------------------------------------------------------------

    def register(
        self, name: str, email: str | None = None, password: str = PASSWORD, *, expect: Expect = 201
    ) -> Any:
        body = {"name": name, "email": email or _default_email(name), "password": password}
        return self.call("POST", "/register", json=body, expect=expect)

    def login(self, email: str, password: str = PASSWORD, *, expect: Expect = 200) -> Any:
        """The OAuth2 password form, as Swagger UI and other OAuth2 clients send it."""
        return self.call("POST", "/login", data={"username": email, "password": password}, expect=expect)

    def account(self, name: str, email: str | None = None, password: str = PASSWORD) -> Account:
        """Register and log in: a person with a real token (and the refresh token of its session)."""
        email = email or _default_email(name)
        user = self.register(name, email, password)
        return Account(user["id"], name, email, "").with_tokens(self.login(email, password))

    def session_of(self, account: Account, password: str = PASSWORD) -> Account:
        """Another login of the same person: a second session, as from another device."""
        return account.with_tokens(self.login(account.email, password))

    # Sessions -------------------------------------------------------------------------------------

    def refresh(self, refresh_token: str, *, expect: Expect = 200) -> Any:
        """Spend a refresh token: new access and refresh tokens, like login's answer."""
        return self.call("POST", "/token/refresh", json={"refresh_token": refresh_token}, expect=expect)

    def logout(self, account: Account, *, expect: Expect = 204) -> Any:
        return self._no_content(self.call("POST", "/logout", account, expect=None), expect)

    def sessions(self, account: Account, *, expect: Expect = 200) -> Any:
        return self.call("GET", "/sessions", account, expect=expect)

    def revoke_session(self, account: Account, session_id: str, *, expect: Expect = 204) -> Any:
        return self._no_content(self.call("DELETE", f"/sessions/{session_id}", account, expect=None), expect)

    def revoke_other_sessions(self, account: Account, *, expect: Expect = 204) -> Any:
        return self._no_content(self.call("DELETE", "/sessions", account, expect=None), expect)

    def change_password(self, account: Account, current: str, new: str, *, expect: Expect = 204) -> Any:
        body = {"current_password": current, "new_password": new}
        return self._no_content(
            self.call("POST", "/users/me/password", account, json=body, expect=None), expect
        )

    def me(self, account: Account, *, expect: Expect = 200) -> Any:
        return self.call("GET", "/users/me", account, expect=expect)

    def delete_account(self, account: Account, password: str = PASSWORD, *, expect: Expect = 204) -> Any:
        body = {"password": password}
        return self._no_content(self.call("DELETE", "/users/me", account, json=body, expect=None), expect)

    @staticmethod
    def _no_content(response: httpx.Response, expect: Expect) -> Any:
        """For routes that answer 204: the body is empty, so only an error has one to decode."""
        if expect is None:
            return response
        allowed = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in allowed, (
            f"expected {expect}, got {response.status_code}: {response.text}"
        )
        return None if response.status_code == 204 else response.json()

    def people(self, *names: str) -> list[Account]:
        """Accounts with addresses no other test uses, for servers and databases shared between tests."""
        return [self.account(name, f"{name.lower()}-{next(_unique)}@example.com") for name in names]

    # Chats ----------------------------------------------------------------------------------------

    def private_chat(self, caller: Account, other: Person, *, expect: Expect = 201) -> Any:
        """The chat of two people: 201 when it is new, 200 when it existed."""
        body = {"type": "private", "user_id": _user_id(other)}
        return self.call("POST", "/chats", caller, json=body, expect=expect)

    def group(
        self, owner: Account, name: str, members: Sequence[Person] = (), *, expect: Expect = 201
    ) -> Any:
        body = {"type": "group", "name": name, "member_ids": [_user_id(m) for m in members]}
        return self.call("POST", "/chats", owner, json=body, expect=expect)

    def add_member(self, caller: Account, chat_id: int, user: Person, *, expect: Expect = 200) -> Any:
        return self.call("POST", f"/groups/{chat_id}/add_user/{_user_id(user)}", caller, expect=expect)

    def remove_member(self, caller: Account, chat_id: int, user: Person, *, expect: Expect = 200) -> Any:
        return self.call("POST", f"/groups/{chat_id}/remove_user/{_user_id(user)}", caller, expect=expect)

    def chat(self, account: Account, chat_id: int, *, expect: Expect = 200) -> Any:
        return self.call("GET", f"/chats/{chat_id}", account, expect=expect)

    def chats(self, account: Account, *, expect: Expect = 200) -> Any:
        """The inbox: the caller's chats, most recent activity first."""
        return self.call("GET", "/chats", account, expect=expect)

    # Messages -------------------------------------------------------------------------------------

    def send(
        self,
        account: Account,
        chat_id: int,
        text: str,
        client_id: str | None = None,
        *,
        expect: Expect = 201,
    ) -> Any:
        """Send over REST: 201 for a new message, 200 for a repeated ``client_id`` (made up when None)."""
        body = {"text": text, "client_id": client_id or f"api-{next(_unique)}"}
        return self.call("POST", f"/chats/{chat_id}/messages", account, json=body, expect=expect)

    def read(self, account: Account, chat_id: int, seq: int, *, expect: Expect = 200) -> Any:
        """Move the caller's read marker; the answer has it and the chat's ``all_read_seq``."""
        return self.call("POST", f"/chats/{chat_id}/read", account, json={"seq": seq}, expect=expect)

    def history(self, account: Account, chat_id: int, *, expect: Expect = 200, **params: Any) -> Any:
        return self.call("GET", f"/history/{chat_id}", account, params=params, expect=expect)

    def edit(self, account: Account, chat_id: int, seq: int, text: str, *, expect: Expect = 200) -> Any:
        """Give a message a new text; the answer is the updated message."""
        return self.call(
            "PATCH", f"/chats/{chat_id}/messages/{seq}", account, json={"text": text}, expect=expect
        )

    def delete_message(self, account: Account, chat_id: int, seq: int, *, expect: Expect = 204) -> Any:
        response = self.call("DELETE", f"/chats/{chat_id}/messages/{seq}", account, expect=None)
        return self._no_content(response, expect)

    def react(
        self, account: Account, chat_id: int, seq: int, emoji: str, *, on: bool = True, expect: Expect = 204
    ) -> Any:
        """Add (``on``) or take back a reaction; the emoji is percent-encoded into the path."""
        path = f"/chats/{chat_id}/messages/{seq}/reactions/{quote(emoji, safe='')}"
        return self._no_content(self.call("PUT" if on else "DELETE", path, account, expect=None), expect)

    def changes(self, account: Account, chat_id: int, *, expect: Expect = 200, **params: Any) -> Any:
        """The chat's change feed (``after_rev``, ``limit``): messages ascending by their latest rev."""
        return self.call("GET", f"/chats/{chat_id}/changes", account, params=params, expect=expect)


def register_and_login(
    http: httpx.Client, name: str, email: str | None = None, password: str = PASSWORD
) -> Account:
    """Register through the API and log in; works with TestClient and httpx.Client alike."""
    return Api(http).account(name, email, password)
