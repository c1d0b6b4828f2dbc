"""Starting and stopping a server process cleanly.

Start: wait for the database with backoff (containers start in any order), then migrate.
Stop: on SIGTERM, stop listening, let every socket finish the frame it is handling, close it with 1001
(going away) so its client reconnects elsewhere with ``after_seq``, then let the server shut down.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import anyio
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.plugins import InitPluginProtocol
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from windi_chat.config import Settings
from windi_chat.database import is_unavailable, migrate

__all__ = ("BackgroundPlugin", "DatabaseUnreachableError", "install_graceful_shutdown", "prepare_database")

logger = logging.getLogger("windi_chat.lifecycle")

MAX_RETRY_DELAY_SECONDS = 5.0
DRAIN_SECONDS = 5.0


class DatabaseUnreachableError(RuntimeError):
    """The database did not answer within the start-up timeout; a supervisor should restart us."""


async def prepare_database(engine: AsyncEngine, settings: Settings) -> None:
    """Wait until the database answers (logging each try), then bring the schema up to date."""
    deadline = time.monotonic() + settings.db_startup_timeout
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            if settings.migrate_on_start:
                await migrate(engine)
            else:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = (
                    f"The database did not answer within {settings.db_startup_timeout:g}s "
                    f"({attempt} attempts, last error: {type(exc).__name__}); check WINDI_DATABASE_URL"
                )
                logger.error(msg)
                raise DatabaseUnreachableError(msg) from None
            logger.warning(
                "Database not reachable (attempt %d: %s); retrying in %.1fs",
                attempt,
                type(exc).__name__,
                delay,
            )
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
        else:
            if attempt > 1:
                logger.info("Database reachable after %d attempts", attempt)
            return


def install_graceful_shutdown(drain: Callable[[], Awaitable[None]]) -> None:
    """Run ``drain`` on SIGTERM before handing the signal to the server's own handler.

    uvicorn's handler is a bound ``Server.handle_exit``; through it the listening sockets are closed
    first, so no new connection arrives while the open ones are drained. Only the main thread can
    install signal handlers; elsewhere (tests running the app in a thread) nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    server = getattr(previous, "__self__", None)
    draining: list[asyncio.Task[None]] = []

    def hand_over(sig: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    async def drain_then_exit(sig: int) -> None:
        logger.info("SIGTERM: closing sockets before shutting down")
        for listener in getattr(server, "servers", []):
            listener.close()
        with anyio.move_on_after(DRAIN_SECONDS):
            await drain()
        hand_over(sig, None)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if draining:  # a second signal: stop waiting
            hand_over(sig, frame)
            return
        draining.append(loop.create_task(drain_then_exit(sig)))

    def schedule(sig: int, frame: FrameType | None) -> Any:
        loop.call_soon_threadsafe(on_sigterm, sig, frame)

    signal.signal(signal.SIGTERM, schedule)


class BackgroundPlugin(InitPluginProtocol):
    """A plugin with background work that needs live delivery and the database while it runs.

    Its lifespan is entered after the channels plugin's, so it is left before it (shutdown hooks run
    only once every lifespan is left): the work stops while delivery and the database still run.
    """

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan.append(self._lifespan)
        return app_config

    @asynccontextmanager
    async def _lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        await self._start()
        try:
            yield
        finally:
            await self._stop()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError
