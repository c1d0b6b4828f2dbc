"""Live delivery between processes over PostgreSQL LISTEN/NOTIFY.

:class:`PostgresChannelsBackend` is a channels backend of its own rather than a subclass of Litestar's
asyncpg backend, whose private attributes it would otherwise have to reach into. The payload codec
(:func:`encode_payloads`, :class:`PayloadAssembler`) carries events past PostgreSQL's 8000-byte NOTIFY
limit; its wire format is shared by every process on the database, so it must not change in a release
that may run beside the previous one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg
from litestar.channels import ChannelsBackend

__all__ = ("PayloadAssembler", "PostgresChannelsBackend", "encode_payloads")

logger = logging.getLogger("windi_chat.pg_channels")

# Names the backend's connections carry in pg_stat_activity.
LISTEN_APPLICATION_NAME = "windi-chat-listen"
PUBLISH_APPLICATION_NAME = "windi-chat-publish"

# A connection that stops answering must fail rather than hang delivery (or shutdown) for good.
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 10.0
# How long the LISTEN connection may stay silent before it is asked whether it is still there.
LISTEN_CHECK_SECONDS = 30.0

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; every payload stays at or under this.
PAYLOAD_BYTES = 7900
WHOLE, PART = "=", "+"
NOT_STARTED = "The PostgreSQL channels backend has not started"
# Parts of events that never complete (sent by something else on the channel) must not pile up.
MAX_PENDING_EVENTS = 100


# The payload codec --------------------------------------------------------------------------------


def encode_payloads(data: bytes, origin: str, event_id: int) -> list[str]:
    """The NOTIFY payloads that carry ``data``: ``=<event>`` when it fits, else numbered parts.

    A part reads ``+<origin>.<event_id>:<index>:<count>:<piece>``; ``origin`` tells this process's events
    from other processes' ones with the same ``event_id``. Parts are cut at character boundaries, as a
    payload must be text.
    """
    text = data.decode()  # also refuses bytes that are not UTF-8 before anything is cut
    if len(data) < PAYLOAD_BYTES:
        return [WHOLE + text]
    name = f"{origin}.{event_id}"
    if ":" in name:
        raise ValueError(f"an event name cannot hold ':' ({name!r})")
    # The count has no more digits than the length of the data, so every header fits in this.
    header_bytes = len(f"{PART}{name}:{len(data)}:{len(data)}:".encode())
    pieces = list(_split(data, PAYLOAD_BYTES - header_bytes))
    return [f"{PART}{name}:{index}:{len(pieces)}:{piece}" for index, piece in enumerate(pieces)]


def _split(data: bytes, size: int) -> Iterator[str]:
    """``data`` (valid UTF-8) in pieces of at most ``size`` bytes, no character cut in two."""
    if size < 4:  # a character takes up to four bytes
        raise ValueError("the event name leaves no room in a NOTIFY payload")
    start = 0
    while start < len(data):
        end = start + size
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # a continuation byte: step back
            end -= 1
        yield data[start:end].decode()
        start = end


@dataclass(slots=True)
class _Parts:
    count: int
    pieces: dict[int, str] = field(default_factory=dict)


class PayloadAssembler:
    """Joins split events again, whatever the order of their parts and however events interleave."""

    def __init__(self, max_pending: int = MAX_PENDING_EVENTS) -> None:
        self._pending: dict[str, _Parts] = {}
        self._max_pending = max_pending

    def feed(self, payload: str) -> bytes | None:
        """The event ``payload`` completes: itself when whole, the joined parts at its last part.

        ``None`` while parts are missing, and for a payload that is not one of ours (logged).
        """
        if payload.startswith(WHOLE):
            return payload[1:].encode()
        part = _parse_part(payload)
        parts = None if part is None else self._pending.get(part[0])
        if part is None or (parts is not None and parts.count != part[2]):
            logger.warning("Ignored a notification that is not an event of this server")
            return None
        name, index, count, piece = part
        if parts is None:
            if len(self._pending) >= self._max_pending:
                del self._pending[next(iter(self._pending))]  # the oldest
            parts = self._pending[name] = _Parts(count)
        parts.pieces[index] = piece
        if len(parts.pieces) < count:
            return None
        del self._pending[name]
        return "".join(parts.pieces[i] for i in range(count)).encode()

    def clear(self) -> None:
        """Forget unfinished events, whose missing parts went with a lost connection."""
        self._pending.clear()


def _parse_part(payload: str) -> tuple[str, int, int, str] | None:
    if not payload.startswith(PART):
        return None
    try:
        name, index, count, piece = payload[1:].split(":", 3)
        part = name, int(index), int(count), piece
    except ValueError:
        return None
    return part if 0 <= part[1] < part[2] else None


# The backend --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ConnectionLost:
    """Queued when a LISTEN connection closes, so the event stream raises instead of going quiet."""

    connection: asyncpg.Connection


class PostgresChannelsBackend(ChannelsBackend):
    """Channels over LISTEN/NOTIFY, fit for production.

    - Publishing reuses one connection instead of opening one per event (the plugin publishes from a
      single worker, so one connection also keeps this process's events in order).
    - Events over the NOTIFY limit are split into parts sent in one transaction, which PostgreSQL
      delivers together and in order, and joined again on receipt.
    - When the LISTEN connection is lost, or stays silent and then fails to answer, the event stream
      raises (so sockets are served from the database meanwhile) and the next stream reconnects and
      listens on every subscribed channel again.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._listen_conn: asyncpg.Connection | None = None
        self._publisher: asyncpg.Connection | None = None
        self._queue: asyncio.Queue[tuple[str, str] | _ConnectionLost] | None = None
        self._subscribed: set[str] = set()
        self._listen_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._assembler = PayloadAssembler()
        self._origin = secrets.token_hex(4)
        self._event_ids = itertools.count(1)
        self._stopping = False

    async def _connect(self, application_name: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            dsn=self._dsn,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings={"application_name": application_name},
        )

    async def on_startup(self) -> None:
        self._stopping = False
        # Locks bind to the loop that first waits on them; a restarted app may run on another.
        self._listen_lock, self._publish_lock = asyncio.Lock(), asyncio.Lock()
        self._queue = asyncio.Queue()
        async with self._listen_lock:
            self._listen_conn = await self._connect(LISTEN_APPLICATION_NAME)
            self._listen_conn.add_termination_listener(self._connection_lost)

    async def on_shutdown(self) -> None:
        self._stopping = True  # closing the LISTEN connection is no loss to report
        async with self._publish_lock:
            if self._publisher is not None:
                await _close(self._publisher)
                self._publisher = None
        async with self._listen_lock:
            if self._listen_conn is not None:
                await _close(self._listen_conn)
                self._listen_conn = None
            self._subscribed.clear()
            self._assembler.clear()
            self._queue = None

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        raise NotImplementedError("NOTIFY keeps no history (and live delivery never asks for one)")

    # Publishing --------------------------------------------------------------------------------------

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        if self._queue is None:  # a connection opened now would outlive the backend
            raise RuntimeError(NOT_STARTED)
        payloads = encode_payloads(data, self._origin, next(self._event_ids))
        arguments = [(channel, payload) for channel in channels for payload in payloads]
        async with self._publish_lock:
            publisher = self._publisher
            if publisher is None or publisher.is_closed():
                publisher = self._publisher = await self._connect(PUBLISH_APPLICATION_NAME)
            try:
                if len(arguments) == 1:
                    await publisher.execute("SELECT pg_notify($1, $2)", *arguments[0])
                else:
                    async with publisher.transaction():
                        await publisher.executemany("SELECT pg_notify($1, $2)", arguments)
            except BaseException:
                # Its state is unknown (perhaps mid-transaction): the next event gets a fresh one.
                publisher.terminate()
                self._publisher = None
                raise

    # Listening ---------------------------------------------------------------------------------------

    def _listening(self) -> asyncpg.Connection:
        if self._listen_conn is None:
            raise RuntimeError(NOT_STARTED)
        return self._listen_conn

    def _connection_lost(self, connection: asyncpg.Connection) -> None:
        if self._queue is not None and not self._stopping:
            self._queue.put_nowait(_ConnectionLost(connection))

    def _notified(self, connection: asyncpg.Connection, pid: int, channel: str, payload: object) -> None:
        if self._queue is not None and isinstance(payload, str):
            self._queue.put_nowait((channel, payload))

    async def subscribe(self, channels: Iterable[str]) -> None:
        async with self._listen_lock:
            connection = self._listening()
            for channel in set(channels) - self._subscribed:
                await connection.add_listener(channel, self._notified)
                self._subscribed.add(channel)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        async with self._listen_lock:
            connection = self._listening()
            for channel in set(channels) & self._subscribed:
                self._subscribed.discard(channel)
                if not connection.is_closed():  # a lost connection listens no more anyway
                    await connection.remove_listener(channel, self._notified)

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        queue = self._queue
        if queue is None:
            raise RuntimeError(NOT_STARTED)
        await self._listen_again()
        while True:
            try:
                notice = await asyncio.wait_for(queue.get(), LISTEN_CHECK_SECONDS)
            except TimeoutError:
                await self._check_listening()
                continue
            if isinstance(notice, _ConnectionLost):
                if notice.connection is not self._listen_conn:
                    continue  # the loss of a connection already replaced
                raise ConnectionError("the LISTEN connection to PostgreSQL was closed")
            channel, payload = notice
            data = self._assembler.feed(payload)
            if data is not None and channel in self._subscribed:  # an UNLISTEN may have been in transit
                yield channel, data

    async def _listen_again(self) -> None:
        """Open a new LISTEN connection for every subscribed channel, if the old one is gone."""
        async with self._listen_lock:
            if not self._listening().is_closed():
                return
            connection = await self._connect(LISTEN_APPLICATION_NAME)
            try:
                for channel in self._subscribed:
                    await connection.add_listener(channel, self._notified)
            except BaseException:
                connection.terminate()
                raise
            connection.add_termination_listener(self._connection_lost)
            self._listen_conn = connection
            self._assembler.clear()
            logger.info("Listening again on %d channels", len(self._subscribed))

    async def _check_listening(self) -> None:
        """A quiet LISTEN connection may be dead without a word (a failover, a dropped route)."""
        # Under the lock: a subscribe running on the connection would make the check fail.
        async with self._listen_lock:
            connection = self._listening()
            try:
                await connection.fetchval("SELECT 1", timeout=COMMAND_TIMEOUT)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                connection.terminate()
                raise ConnectionError("the LISTEN connection to PostgreSQL stopped answering") from exc


async def _close(connection: asyncpg.Connection) -> None:
    """Close gracefully if the server answers in time, else drop the socket: shutdown must not hang."""
    try:
        await connection.close(timeout=CONNECT_TIMEOUT)
    except Exception as exc:  # asyncpg has dropped the socket by then
        logger.warning("Closing a PostgreSQL connection failed: %s", exc)
