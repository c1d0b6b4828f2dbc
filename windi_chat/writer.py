"""One writer per process: sends from every socket and request are stored in batches.

A send waits in a queue while the batch before it commits, then goes into the database with everything
else that waited, in one transaction (``pg_batch`` on PostgreSQL, ``messaging.send_messages`` on
SQLite). A lone send is written at once; under load, batches form by themselves. The caller awaits its
own outcome, which is only known after the commit, so nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import QueuePool

from windi_chat import pg_batch
from windi_chat.database import unit_of_work
from windi_chat.errors import ChatNotFoundError, DomainError, RateLimitedError, UnavailableError
from windi_chat.events import EventBus
from windi_chat.limits import SendLimiter
from windi_chat.message_batch import Pending
from windi_chat.messaging import (
    Sent,
    batch_results,
    clean_text,
    count_stored,
    repeats_reactions,
    send_messages,
)
from windi_chat.models import utcnow

__all__ = ("MessageWriter",)

logger = logging.getLogger("windi_chat.writer")

# Past this many sends, a batch's statement costs more to plan and carry than it saves.
MAX_BATCH = 256
# Seconds a closing writer keeps retrying sends whose chat another transaction holds.
CLOSE_PATIENCE = 5.0
SHUTTING_DOWN = "The server is shutting down; send again after reconnecting"
# Chat ids are 64-bit: a larger one names no chat, and must not reach (and fail) a batch.
MAX_ID = 2**63 - 1

Waiting = tuple[Pending, "asyncio.Future[Sent]"]


class MessageWriter:
    """The queue of sends and the task that stores them."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        events: EventBus,
        max_batch: int = MAX_BATCH,
        limiter: SendLimiter | None = None,
        pool_limit: int | None = None,
    ) -> None:
        self._sessions = sessions
        # On PostgreSQL, batches go through the driver's connection (``pg_batch``); SQLite takes the
        # same outcomes one send at a time within the session's transaction (``message_batch``).
        engine = sessions.kw.get("bind") if isinstance(sessions, async_sessionmaker) else None
        self._engine: AsyncEngine | None = (
            engine if isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql" else None
        )
        self._events = events
        self._limiter = limiter
        self._max_batch = max_batch
        self._queue: list[Waiting] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._give_up_at = 0.0
        self._connection: AsyncConnection | None = None  # held while batches follow each other
        # The connections the pool may open: once all are out, the writer's goes back between batches.
        self._pool_limit = pool_limit

    async def send(
        self, chat_id: int, sender_id: int, client_id: str, text: str, reply_to: int | None = None
    ) -> Sent:
        """Store one message (or find its original) and return it once committed."""
        return await self.submit(chat_id, sender_id, client_id, text, reply_to)

    def submit(
        self, chat_id: int, sender_id: int, client_id: str, text: str, reply_to: int | None = None
    ) -> asyncio.Future[Sent]:
        """Queue one send and return its outcome to come, without waiting for it.

        A socket queues its next sends while earlier ones wait, so they can share a batch. The text is
        checked before it is queued, so one bad send never fails a batch; so is the sender's rate, so a
        flood costs neither the queue nor the database anything. A send refused here comes back as an
        already failed future, in its place among the caller's outcomes.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sent] = loop.create_future()
        try:
            if self._closing:
                raise UnavailableError(SHUTTING_DOWN)
            if not 0 < chat_id <= MAX_ID:
                raise ChatNotFoundError
            pending = Pending(chat_id, sender_id, client_id, clean_text(text), reply_to)
            refused = self._limiter.take(sender_id) if self._limiter is not None else None
            if refused is not None:
                raise RateLimitedError(refused.retry_after, refused.exhausted)
        except DomainError as error:
            future.set_exception(error)
            return future
        self._queue.append((pending, future))
        if self._task is None or self._task.done():
            # Started by the first send, in the loop that serves it.
            self._ready = asyncio.Event()
            self._task = loop.create_task(self._run(), name="windi-message-writer")
        self._ready.set()
        return future

    def open(self) -> None:
        """Take sends again (an application that starts after it was shut down)."""
        self._closing = False

    async def close(self, patience: float = CLOSE_PATIENCE) -> None:
        """Store what is queued, then stop.

        Sends whose chat is still held by another transaction after ``patience`` seconds fail as
        unavailable (their senders send again after reconnecting), so a lock held elsewhere cannot hold
        up the shutdown.
        """
        self._closing = True
        self._give_up_at = time.monotonic() + patience
        self._ready.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        delay = 0.0
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    if delay:
                        await self._let_go()  # nothing to store until then
                        await asyncio.sleep(delay)  # only sends to chats held by someone else are left
                    batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                    busy = await self._write(batch)
                    if self._pool_full():  # a request may be waiting for a connection:
                        await self._let_go()
                        await asyncio.sleep(0)  # it takes this one before the writer asks again
                    if busy and self._closing and time.monotonic() >= self._give_up_at:
                        _refuse(busy, UnavailableError(SHUTTING_DOWN))
                        busy = []
                    # Sends to a chat held elsewhere go first next time, in the order they came.
                    self._queue[:0] = busy
                    delay = 0.0 if len(busy) < len(batch) else min(0.2, max(0.005, delay * 2))
                await self._let_go()
                if self._closing:
                    return
        finally:
            await self._let_go()

    def _pool_full(self) -> bool:
        if self._connection is None or self._engine is None or self._pool_limit is None:
            return False
        pool = self._engine.sync_engine.pool
        return isinstance(pool, QueuePool) and pool.checkedout() >= self._pool_limit

    async def _let_go(self) -> None:
        """Give the connection back to the pool: the queue ran dry, or a batch failed on it."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.close()
        except Exception as exc:  # its reset failed: the database dropped it; the batch's error stands
            logger.warning(
                "The writer's connection could not be returned (%s); it is discarded", type(exc).__name__
            )
            with contextlib.suppress(Exception):
                await connection.invalidate()

    async def _write(self, batch: list[Waiting]) -> list[Waiting]:
        """Store a batch and answer its senders; return the sends whose chat was busy."""
        try:
            results = await self._store([pending for pending, _ in batch])
        except DomainError as error:  # the database is unavailable: every sender hears it
            _refuse(batch, error)
            return []
        except Exception as error:
            if len(batch) > 1:
                # Something in one send that no check caught: store them one by one, so that only the
                # send at fault fails. A send stored before the failure answers as a repeat.
                logger.warning("A batch of %d sends failed (%s); storing them one by one", len(batch), error)
                busy: list[Waiting] = []
                for waiting in batch:
                    busy += await self._write([waiting])
                return busy
            logger.exception("A send failed")
            if not batch[0][1].done():
                batch[0][1].set_exception(error)
            return []
        busy = []
        for waiting, result in zip(batch, results, strict=True):
            future = waiting[1]
            if result is None:
                busy.append(waiting)
            elif future.done():
                continue  # the sender went away; the message is stored all the same
            elif isinstance(result, DomainError):
                future.set_exception(result)
            else:
                future.set_result(result)
        return busy

    async def _store(self, sends: list[Pending]) -> list[Sent | DomainError | None]:
        """One transaction for the batch; its events go out once it committed."""
        if self._engine is None:
            async with unit_of_work(self._sessions) as session:
                return await send_messages(session, self._events, sends, wait=False)
        now = utcnow()
        # One connection for as long as batches follow each other: a checkout and a return to the
        # pool for each would cost about as much as the rest of a small batch's work.
        if self._connection is None:
            self._connection = await pg_batch.connect(self._engine)
        try:
            batch = await pg_batch.store_batch(self._connection, sends, now)
        except BaseException:
            await self._let_go()
            raise
        reactions = {}
        if batch.repeats:
            await self._let_go()  # the session below may need the pool's last connection
            async with unit_of_work(self._sessions) as session:  # repeats: rare, and read after
                reactions = await repeats_reactions(session, batch)
        results, events = batch_results(batch, reactions)
        self._events.committed(events)
        count_stored(batch)
        return results


def _refuse(sends: list[Waiting], error: DomainError) -> None:
    for _, future in sends:
        if not future.done():
            future.set_exception(error)
