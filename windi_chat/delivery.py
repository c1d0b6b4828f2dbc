"""The channels backend behind live delivery, chosen by ``WINDI_CHANNELS_URL``.

``memory://`` serves one process. ``redis://`` (Litestar's Redis pub/sub backend) and ``postgresql://``
(LISTEN/NOTIFY, built on Litestar's asyncpg backend) carry events between processes and hosts. Whatever
the backend, :class:`GuardedBackend` keeps a failure from silencing delivery: the database holds every
message, so sockets that may have missed live events are told to reconnect and catch up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Iterable
from functools import partial
from urllib.parse import urlsplit

import anyio
import asyncpg
from litestar.channels import ChannelsBackend
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.stores.base import Store

from windi_chat.config import ConfigurationError

__all__ = ("GuardedBackend", "PostgresChannelsBackend", "create_backend", "create_shared_store", "redact_url")

logger = logging.getLogger("windi_chat.delivery")

# Names the backend's connections carry in pg_stat_activity.
LISTEN_APPLICATION_NAME = "windi-chat-listen"
PUBLISH_APPLICATION_NAME = "windi-chat-publish"


def redact_url(url: str) -> str:
    """The URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


REDIS_SCHEMES = ("redis", "rediss", "unix")


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def create_backend(url: str) -> ChannelsBackend:
    """The backend named by ``url``; a clear error for an unknown scheme or a missing extra."""
    scheme = _scheme(url)
    if scheme == "memory":
        return MemoryChannelsBackend()
    if scheme in REDIS_SCHEMES:
        try:
            from litestar.channels.backends.redis import RedisChannelsPubSubBackend
            from redis.asyncio import Redis
        except ImportError as exc:
            raise ConfigurationError(
                "WINDI_CHANNELS_URL=redis://... needs the redis extra: pip install 'windi-chat[redis]'"
            ) from exc
        return RedisChannelsPubSubBackend(redis=Redis.from_url(url))
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        return PostgresChannelsBackend(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    raise ConfigurationError(
        f"WINDI_CHANNELS_URL={redact_url(url)} is not supported: use memory://, redis://host:6379/0 "
        "or postgresql://user:password@host:5432/database"
    )


def create_shared_store(url: str) -> Store | None:
    """A store every process shares (for login rate limits) when delivery runs on Redis."""
    if _scheme(url) not in REDIS_SCHEMES:
        return None
    from litestar.stores.redis import RedisStore

    return RedisStore.with_client(url=url, namespace="WINDI_CHAT")


class GuardedBackend(ChannelsBackend):
    """A channels backend that survives its own failures.

    Litestar's publish worker ends at the first exception a backend raises, after which every later
    event queues up silently; its subscriber worker likewise ends when the event stream breaks. Here a
    failed publish is logged and reported (the event is lost for live delivery only: the database has
    it), and a broken stream is reported and reopened with backoff. ``on_lost`` receives the channels
    whose sockets may have missed events, or ``None`` for all of them, so they can be told to catch up.

    A failed subscribe is not raised into the plugin, which would keep the channel marked as
    subscribed for every later socket; the channel is left out of :meth:`is_subscribed` instead, and the
    socket that asked for it is refused.
    """

    def __init__(self, backend: ChannelsBackend, on_lost: Callable[[Iterable[str] | None], None]) -> None:
        self._backend = backend
        self._on_lost = on_lost
        self._subscribed: set[str] = set()

    def is_subscribed(self, channel: str) -> bool:
        return channel in self._subscribed

    async def on_startup(self) -> None:
        await self._backend.on_startup()

    async def on_shutdown(self) -> None:
        await self._backend.on_shutdown()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        try:
            await self._backend.publish(data, channels)
        except Exception:
            logger.exception("Publishing an event failed; its sockets will be asked to catch up")
            self._on_lost(list(channels))

    async def subscribe(self, channels: Iterable[str]) -> None:
        wanted = set(channels)
        try:
            await self._backend.subscribe(wanted)
        except Exception as exc:
            logger.warning("Subscribing to %s failed: %s", ", ".join(sorted(wanted)), exc)
            return
        self._subscribed |= wanted

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        unwanted = set(channels)
        self._subscribed -= unwanted
        try:
            await self._backend.unsubscribe(unwanted)
        except Exception as exc:
            logger.warning("Unsubscribing from %s failed: %s", ", ".join(sorted(unwanted)), exc)

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        delay = 0.1
        while True:
            try:
                async for event in self._backend.stream_events():
                    delay = 0.1
                    yield event
                return
            except Exception as exc:
                logger.error("The event stream broke (%s); reopening it in %.1fs", exc, delay)
                self._on_lost(None)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        return await self._backend.get_history(channel, limit)


# A connection that stops answering must fail rather than hang delivery (or shutdown) for good.
CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 10.0
# How long the LISTEN connection may stay silent before it is asked whether it is still there.
LISTEN_CHECK_SECONDS = 30.0


async def _connect(dsn: str, application_name: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn=dsn,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings={"application_name": application_name},
    )


class _ConnectionLost:
    """Queued by the listen connection's termination callback, so the event stream can raise."""


class PostgresChannelsBackend(AsyncPgChannelsBackend):
    """LISTEN/NOTIFY with what Litestar's asyncpg backend lacks for production.

    - Publishing reuses one connection instead of opening one per event (the plugin publishes from a
      single worker, so one connection also keeps this process's events in order).
    - NOTIFY payloads are limited to 8000 bytes, and a message frame can be four times that. Larger
      events are split into parts sent in one transaction, which PostgreSQL delivers together and in
      order, and joined again here.
    - When the LISTEN connection is cut, the event stream raises (so sockets are told to catch up) and
      the next stream reconnects and listens on every subscribed channel again.
    """

    MAX_PAYLOAD_BYTES = 7900
    PART_CHARS = 1900  # at most four bytes a character: a part stays under the limit with its prefix

    def __init__(self, dsn: str) -> None:
        super().__init__(make_connection=partial(_connect, dsn, LISTEN_APPLICATION_NAME))
        self._connect_publisher = partial(_connect, dsn, PUBLISH_APPLICATION_NAME)
        self._publisher: asyncpg.Connection | None = None
        self._publish_lock = asyncio.Lock()
        self._origin = secrets.token_hex(4)
        self._event_ids = itertools.count(1)
        self._parts: dict[str, list[str | None]] = {}
        self._stopping = False

    async def on_startup(self) -> None:
        self._stopping = False
        await super().on_startup()
        self._listener_conn.add_termination_listener(self._connection_lost)

    async def on_shutdown(self) -> None:
        self._stopping = True
        if self._publisher is not None:
            await self._publisher.close(timeout=CONNECT_TIMEOUT)
        await super().on_shutdown()

    # Publishing --------------------------------------------------------------------------------------

    def _payloads(self, data: bytes) -> list[str]:
        text = data.decode()
        if len(data) <= self.MAX_PAYLOAD_BYTES:
            return ["=" + text]
        pieces = [text[i : i + self.PART_CHARS] for i in range(0, len(text), self.PART_CHARS)]
        event_id = f"{self._origin}.{next(self._event_ids)}"
        return [f"+{event_id}:{index}:{len(pieces)}:{piece}" for index, piece in enumerate(pieces)]

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        payloads = self._payloads(data)
        arguments = [(channel, payload) for channel in channels for payload in payloads]
        async with self._publish_lock:
            if self._publisher is None or self._publisher.is_closed():
                self._publisher = await self._connect_publisher()
            try:
                if len(arguments) == 1:
                    await self._publisher.execute("SELECT pg_notify($1, $2)", *arguments[0])
                else:
                    async with self._publisher.transaction():
                        await self._publisher.executemany("SELECT pg_notify($1, $2)", arguments)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self._publisher.close(timeout=1)
                self._publisher = None
                raise

    # Listening ---------------------------------------------------------------------------------------

    def _connection_lost(self, connection: asyncpg.Connection) -> None:
        if self._queue is not None and not self._stopping:
            self._queue.put_nowait((_ConnectionLost, connection))  # type: ignore[arg-type]

    def _listener(self, /, connection: asyncpg.Connection, pid: int, channel: str, payload: object) -> None:
        if self._queue is not None and isinstance(payload, str):
            self._queue.put_nowait((channel, payload))  # type: ignore[arg-type]

    async def subscribe(self, channels: Iterable[str]) -> None:
        async with self._listener_lock:
            for channel in set(channels) - self._subscribed_channels:
                await self._listener_conn.add_listener(channel, self._listener)  # type: ignore[arg-type]
                self._subscribed_channels.add(channel)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        async with self._listener_lock:
            for channel in set(channels) & self._subscribed_channels:
                self._subscribed_channels.discard(channel)
                if not self._listener_conn.is_closed():
                    await self._listener_conn.remove_listener(channel, self._listener)  # type: ignore[arg-type]

    async def _listen_again(self) -> None:
        """Open a new LISTEN connection for every subscribed channel, if the old one is gone."""
        async with self._listener_lock:
            if not self._listener_conn.is_closed():
                return
            connection = await self._connect()
            try:
                for channel in self._subscribed_channels:
                    await connection.add_listener(channel, self._listener)  # type: ignore[arg-type]
            except BaseException:
                connection.terminate()
                raise
            connection.add_termination_listener(self._connection_lost)
            self._listener_conn = connection
            self._parts.clear()
            logger.info("Listening again on %d channels", len(self._subscribed_channels))

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        if self._queue is None:
            raise RuntimeError("The backend has not started")
        await self._listen_again()
        while True:
            try:
                channel, payload = await asyncio.wait_for(self._queue.get(), LISTEN_CHECK_SECONDS)
            except TimeoutError:
                await self._check_listening()
                continue
            if channel is _ConnectionLost:
                if payload is not self._listener_conn:
                    continue  # the loss of a connection already replaced
                raise ConnectionError("the LISTEN connection to PostgreSQL was closed")
            data = self._assemble(payload)  # type: ignore[arg-type]
            if data is not None and channel in self._subscribed_channels:
                yield channel, data

    async def _check_listening(self) -> None:
        """A quiet LISTEN connection may be dead without a word (a failover, a dropped route)."""
        try:
            await self._listener_conn.fetchval("SELECT 1", timeout=COMMAND_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._listener_conn.terminate()
            raise ConnectionError("the LISTEN connection to PostgreSQL stopped answering") from exc

    def _assemble(self, payload: str) -> bytes | None:
        """The event a payload completes: itself when whole, the joined parts at the last part."""
        if payload[:1] == "=":
            return payload[1:].encode()
        try:
            event_id, index, count, piece = payload[1:].split(":", 3)
            parts = self._parts.setdefault(event_id, [None] * int(count))
            parts[int(index)] = piece
        except (ValueError, IndexError):
            logger.warning("Ignored a notification that is not an event of this server")
            return None
        if any(part is None for part in parts):
            return None
        del self._parts[event_id]
        return "".join(parts).encode()  # type: ignore[arg-type]
