"""Fixtures for the web client's tests: one real server on PostgreSQL and one headless Chromium.

Chromium comes from the system (Debian's ``chromium`` package), driven by Playwright without its own
browser download. Without either, the tests are skipped with the reason, unless
``WINDI_TEST_REQUIRE_BROWSER=1`` (as in CI) turns that into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.api import Api
from tests.conftest import LiveServer, start_server, stop_server

if TYPE_CHECKING:
    from tests.browser.person import Person

REQUIRE_BROWSER = os.environ.get("WINDI_TEST_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("WINDI_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Flags that keep a headless Chromium quiet on a closed network and let it run as root.
SHORT_TOKEN_TTL = 5
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def web_server(shared_postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for every browser test: each test makes people of its own."""
    server = start_server(shared_postgres_url, tmp_path_factory.mktemp("web") / "server.log")
    yield server
    stop_server(server)


@pytest.fixture(scope="package")
def short_token_server(
    shared_postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server whose access tokens live five seconds: clients must keep renewing them."""
    log_path = tmp_path_factory.mktemp("web-short-tokens") / "server.log"
    server = start_server(shared_postgres_url, log_path, {"WINDI_TOKEN_TTL_SECONDS": str(SHORT_TOKEN_TTL)})
    yield server
    stop_server(server)


@pytest.fixture(scope="package")
def browser(web_server: LiveServer) -> Iterator[Any]:
    """Headless Chromium, for the tests of this package only.

    Playwright's synchronous API keeps an event loop running on this thread while it is open, and the
    database fixtures run loops of their own: it starts after the server and the database, and ends
    with this package's tests, before any other test needs a loop.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium chromium-driver)")
    # Playwright gives the browser a new empty profile directory of its own.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def rest(web_server: LiveServer) -> Iterator[Api]:
    """The REST driver against the same server, to set the scene quickly."""
    with httpx.Client(base_url=web_server.base_url, timeout=10) as http:
        yield Api(http)


@pytest.fixture
def person(browser: Any, web_server: LiveServer) -> Iterator[Any]:
    """Makes people, each in a browser context of their own (own storage, own sockets)."""
    from tests.browser.person import Person

    people: list[Person] = []

    def make(name: str, server: LiveServer | None = None, **context_options: Any) -> Person:
        base_url = (server or web_server).base_url
        people.append(Person(browser.new_context(**context_options), base_url, name))
        return people[-1]

    yield make
    for someone in people:
        someone.context.close()
    # An uncaught error in any page fails the test, whatever it checked.
    assert [error for someone in people for error in someone.errors] == []
