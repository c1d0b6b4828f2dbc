"""The channels backend behind live delivery, chosen by ``WINDI_CHANNELS_URL``.

``memory://`` serves one process. ``redis://`` (Litestar's Redis pub/sub backend) and ``postgresql://``
(LISTEN/NOTIFY, :mod:`windi_chat.pg_channels`) carry events between processes and hosts. Whatever
the backend, :class:`GuardedBackend` keeps a failure from silencing delivery: the database holds every
message, so sockets that may have missed live events are served from it until the backend is back
(degraded mode, :mod:`windi_chat.poller`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from urllib.parse import urlsplit

import anyio
from litestar.channels import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend

from windi_chat.config import ConfigurationError
from windi_chat.metrics import DELIVERY_RECONNECTS, METERS
from windi_chat.namespaces import NamespacedBackend
from windi_chat.pg_channels import PostgresChannelsBackend
from windi_chat.stores import REDIS_SCHEMES

__all__ = ("GuardedBackend", "create_backend", "redact_url")

logger = logging.getLogger("windi_chat.delivery")


def redact_url(url: str) -> str:
    """The URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def create_backend(url: str, namespace: str) -> ChannelsBackend:
    """The backend named by ``url``; a clear error for an unknown scheme or a missing extra.

    A shared backend's channel names carry ``namespace``, so deployments sharing it stay apart.
    """
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
        redis = Redis.from_url(url)
        # Litestar's backend closes its subscription at shutdown but not the client's pooled connections.
        return NamespacedBackend(RedisChannelsPubSubBackend(redis=redis), namespace, close=redis.aclose)
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        return NamespacedBackend(PostgresChannelsBackend(dsn), namespace)
    raise ConfigurationError(
        f"WINDI_CHANNELS_URL={redact_url(url)} is not supported: use memory://, redis://host:6379/0 "
        "or postgresql://user:password@host:5432/database"
    )


class GuardedBackend(ChannelsBackend):
    """A channels backend that survives its own failures.

    Litestar's publish worker ends at the first exception a backend raises, after which every later
    event queues up silently; its subscriber worker likewise ends when the event stream breaks. Here a
    failed publish is logged and reported (the event is lost for live delivery only: the database has
    it), and a broken stream is reported and reopened with backoff. ``on_lost`` receives the channels
    whose sockets may have missed events, or ``None`` for all of them, so they can be served from the
    database until the backend is back (see ``windi_chat.poller``).

    A failed subscribe is not raised into the plugin, which would keep the channel marked as
    subscribed for every later socket; it is reported like a lost event, the channel is left out of
    :meth:`is_subscribed`, and :meth:`subscribe_again` retries it once the backend is back.

    Upstream: the publish worker's end is https://github.com/litestar-org/litestar/issues/5008 (a single
    exception in ``backend.publish`` breaks all later publishing); once a release that fixes it is the
    minimum, the publish guard can go. We know of no upstream issue for the subscriber worker's end. The
    subscribe/unsubscribe race that :class:`~windi_chat.realtime.SocketRegistry` serializes against is
    https://github.com/litestar-org/litestar/issues/4894.
    """

    def __init__(self, backend: ChannelsBackend, on_lost: Callable[[Iterable[str] | None], None]) -> None:
        self._backend = backend
        self._on_lost = on_lost
        self._subscribed: set[str] = set()
        self._failed: set[str] = set()  # wanted by the plugin, but not subscribed on the backend
        self._publish_failing = False

    def is_subscribed(self, channel: str) -> bool:
        return channel in self._subscribed

    async def on_startup(self) -> None:
        await self._backend.on_startup()

    async def on_shutdown(self) -> None:
        await self._backend.on_shutdown()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        try:
            await self._backend.publish(data, channels)
        except Exception as exc:
            # Once per outage: the poller's warning says what it means, and every event would repeat it.
            log = logger.debug if self._publish_failing else logger.info
            log("Publishing an event failed: %s: %s", type(exc).__name__, exc)
            self._publish_failing = True
            self._on_lost(list(channels))
        else:
            self._publish_failing = False

    async def subscribe(self, channels: Iterable[str]) -> None:
        wanted = set(channels)
        try:
            await self._backend.subscribe(wanted)
        except Exception as exc:
            logger.info("Subscribing to %s failed: %s", ", ".join(sorted(wanted)), exc)
            self._failed |= wanted
            self._on_lost(wanted)
            return
        self._subscribed |= wanted

    async def subscribe_again(self) -> bool:
        """Retry the subscribes that failed; whether every wanted channel is now subscribed."""
        retried = set(self._failed)
        if not retried:
            return True
        try:
            await self._backend.subscribe(retried)
        except Exception as exc:
            logger.debug("Subscribing again to %d channels failed: %s", len(retried), exc)
            return False
        self._subscribed |= retried & self._failed  # less any unsubscribed meanwhile
        self._failed -= retried
        return True

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        unwanted = set(channels)
        self._subscribed -= unwanted
        self._failed -= unwanted
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
                log = logger.info if delay == 0.1 else logger.debug  # once per outage, as for publishing
                log("The event stream broke (%s: %s); reopening it in %.1fs", type(exc).__name__, exc, delay)
                self._on_lost(None)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
                if METERS.on:
                    DELIVERY_RECONNECTS.inc()

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        return await self._backend.get_history(channel, limit)
