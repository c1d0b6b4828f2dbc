"""One writer per process: sends from every socket and request are stored in batches.

A send waits in a queue while the batch before it commits, then goes into the database with everything
else that waited, in one transaction (``messaging.send_messages``). A lone send is written at once; under
load, batches form by themselves. The caller awaits its own outcome, which is only known after the
commit, so nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.database import unit_of_work
from windi_chat.errors import DomainError, UnavailableError
from windi_chat.events import EventBus
from windi_chat.message_batch import Pending
from windi_chat.messaging import Sent, clean_text, send_messages

__all__ = ("MessageWriter",)

logger = logging.getLogger("windi_chat.writer")

# Past this many sends, a batch's statement costs more to plan and carry than it saves.
MAX_BATCH = 256


class MessageWriter:
    """The queue of sends and the task that stores them."""

    def __init__(
        self, sessions: Callable[[], AsyncSession], events: EventBus, max_batch: int = MAX_BATCH
    ) -> None:
        self._sessions = sessions
        self._events = events
        self._max_batch = max_batch
        self._queue: list[tuple[Pending, asyncio.Future[Sent]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def send(self, chat_id: int, sender_id: int, client_id: str, text: str) -> Sent:
        """Store one message (or find its original) and return it once committed.

        The text is checked before it is queued, so one bad send never fails a batch.
        """
        if self._closing:
            raise UnavailableError("The server is shutting down; send again after reconnecting")
        pending = Pending(chat_id, sender_id, client_id, clean_text(text))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sent] = loop.create_future()
        self._queue.append((pending, future))
        if self._task is None or self._task.done():
            # Started by the first send, in the loop that serves it.
            self._ready = asyncio.Event()
            self._task = loop.create_task(self._run(), name="windi-message-writer")
        self._ready.set()
        return await future

    def open(self) -> None:
        """Take sends again (an application that starts after it was shut down)."""
        self._closing = False

    async def close(self) -> None:
        """Store what is queued, then stop."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                await self._write(batch)
            if self._closing:
                return

    async def _write(self, batch: list[tuple[Pending, asyncio.Future[Sent]]]) -> None:
        try:
            async with unit_of_work(self._sessions) as session:
                results = await send_messages(session, self._events, [pending for pending, _ in batch])
        except Exception as error:  # every waiting sender hears of it, as if it had sent alone
            if not isinstance(error, DomainError):
                logger.exception("A batch of %d sends failed", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the sender went away; the message is stored all the same
            if isinstance(result, DomainError):
                future.set_exception(result)
            else:
                future.set_result(result)
