"""The store behind the login rate limits: shared through Redis, and per process while Redis is down.

A rate limit protects login; it must not take login down with it. While the shared store cannot be
reached, :class:`FailSafeStore` counts in this process instead (so for that time each process allows
the limit on its own) and asks the shared store again every few seconds.

Both stores also count atomically (:meth:`increment`), for limits that must hold when many attempts
arrive at once. The per-process store forgets expired entries as it goes, so an attacker who rotates
addresses or emails costs memory for one window at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from litestar.stores.base import StorageObject, Store
from litestar.stores.memory import MemoryStore

__all__ = (
    "REDIS_SCHEMES",
    "SHARED_STORE_RETRY_SECONDS",
    "CountingStore",
    "ExpiringMemoryStore",
    "FailSafeStore",
    "create_shared_store",
)

logger = logging.getLogger("windi_chat.stores")

T = TypeVar("T")

REDIS_SCHEMES = ("redis", "rediss", "unix")
# After a failure the shared store is left alone this long: a down Redis costs one failed connect per
# interval, not one per login.
SHARED_STORE_RETRY_SECONDS = 2.0
# A down Redis should fail a login's limit check quickly, not hold the request.
REDIS_TIMEOUT_SECONDS = 1.0
# While the shared store stays down, the warning is repeated at most this often.
WARNING_INTERVAL_SECONDS = 60.0
# The per-process store drops its expired entries at most this often: a sweep walks every entry.
SWEEP_INTERVAL_SECONDS = 10.0
# INCR and its expiry in one step: the first attempt of a window starts it, later ones leave it alone.
_INCREMENT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
"""


class CountingStore(Store):
    """A store that can also count attempts in a window, atomically."""

    async def increment(self, key: str, window_seconds: int) -> tuple[int, int]:
        """Count one more under ``key``; return the count and the seconds left in its window.

        The window starts with the first count and is not extended by later ones.
        """
        raise NotImplementedError


class ExpiringMemoryStore(MemoryStore, CountingStore):
    """Litestar's memory store, which keeps an expired entry until it is read again, plus a sweep.

    Every write drops the expired entries when the last sweep is older than ``sweep_seconds``, so the
    store holds what one window of traffic wrote, however many keys have come and gone.
    """

    def __init__(self, sweep_seconds: float = SWEEP_INTERVAL_SECONDS) -> None:
        super().__init__()
        self._sweep_seconds = sweep_seconds
        self._swept_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._store)

    def _sweep(self) -> None:
        # No await inside: on one event loop, nothing else touches the dict meanwhile.
        now = time.monotonic()
        if now - self._swept_at >= self._sweep_seconds:
            self._swept_at = now
            self._store = {key: item for key, item in self._store.items() if not item.expired}

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        self._sweep()
        await super().set(key, value, expires_in)

    async def increment(self, key: str, window_seconds: int) -> tuple[int, int]:
        self._sweep()
        item = self._store.get(key)
        if item is None or item.expired:
            item = StorageObject.new(b"1", window_seconds)
        else:
            item = StorageObject(expires_at=item.expires_at, data=str(int(item.data) + 1).encode())
        self._store[key] = item
        return int(item.data), max(1, item.expires_in)


class _RedisCountingStore(CountingStore):
    """Litestar's Redis store, plus :meth:`increment` as one Lua script."""

    def __init__(self, store: Any, redis: Any) -> None:
        self._store = store
        self._increment = redis.register_script(_INCREMENT_SCRIPT)

    async def increment(self, key: str, window_seconds: int) -> tuple[int, int]:
        count, ttl = await self._increment(keys=[self._store._make_key(key)], args=[window_seconds])
        return int(count), max(1, int(ttl))

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        await self._store.set(key, value, expires_in)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        result: bytes | None = await self._store.get(key, renew_for)
        return result

    async def delete(self, key: str) -> None:
        await self._store.delete(key)

    async def delete_all(self) -> None:
        await self._store.delete_all()

    async def exists(self, key: str) -> bool:
        return bool(await self._store.exists(key))

    async def expires_in(self, key: str) -> int | None:
        result: int | None = await self._store.expires_in(key)
        return result

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._store.__aexit__(exc_type, exc_val, exc_tb)


def create_shared_store(url: str, namespace: str = "") -> CountingStore | None:
    """A store every process of this deployment shares (for login limits) when delivery runs on Redis.

    Its keys carry the deployment's channel namespace, so deployments sharing a Redis count apart.
    """
    if url.partition("://")[0].lower() not in REDIS_SCHEMES:
        return None
    from litestar.stores.redis import RedisStore
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError

    redis = Redis.from_url(
        url,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),  # no retries with backoff: the per-process fallback is the retry
    )
    shared = RedisStore(redis, namespace=f"WINDI_CHAT:{namespace}", handle_client_shutdown=True)
    return FailSafeStore(_RedisCountingStore(shared, redis), errors=(RedisError, OSError))


class FailSafeStore(CountingStore):
    """A shared store that falls back to a store of this process while the shared one fails.

    Only ``errors`` (the shared store's connection failures) switch to the fallback; the switch and
    the return are each logged once, and a lasting outage at most once a minute.
    """

    def __init__(
        self,
        shared: CountingStore,
        errors: tuple[type[BaseException], ...],
        retry_seconds: float = SHARED_STORE_RETRY_SECONDS,
    ) -> None:
        self._shared = shared
        self._local = ExpiringMemoryStore()
        self._errors = errors
        self._retry_seconds = retry_seconds
        self._skip_until = 0.0
        self._failing_since: float | None = None
        self._warned_at = 0.0

    async def _use(self, operation: Callable[[CountingStore], Awaitable[T]]) -> T:
        now = time.monotonic()
        if now >= self._skip_until:
            try:
                result = await operation(self._shared)
            except self._errors as exc:
                self._failed(exc, now)
            else:
                self._answered(now)
                return result
        return await operation(self._local)

    def _failed(self, exc: BaseException, now: float) -> None:
        self._skip_until = now + self._retry_seconds
        if self._failing_since is None:
            self._failing_since = self._warned_at = now
            logger.warning(
                "Rate-limit store unavailable (%s): counting login attempts per process until it is back",
                type(exc).__name__,
            )
        elif now - self._warned_at >= WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            logger.warning(
                "Rate-limit store still unavailable after %.0fs (%s): counting per process",
                now - self._failing_since,
                type(exc).__name__,
            )

    def _answered(self, now: float) -> None:
        if self._failing_since is not None:
            logger.warning("Rate-limit store reachable again after %.0fs", now - self._failing_since)
            self._failing_since = None

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        await self._use(lambda store: store.set(key, value, expires_in))

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await self._use(lambda store: store.get(key, renew_for))

    async def delete(self, key: str) -> None:
        await self._use(lambda store: store.delete(key))

    async def delete_all(self) -> None:
        await self._local.delete_all()
        await self._use(lambda store: store.delete_all())

    async def exists(self, key: str) -> bool:
        return await self._use(lambda store: store.exists(key))

    async def expires_in(self, key: str) -> int | None:
        return await self._use(lambda store: store.expires_in(key))

    async def increment(self, key: str, window_seconds: int) -> tuple[int, int]:
        return await self._use(lambda store: store.increment(key, window_seconds))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._shared.__aexit__(exc_type, exc_val, exc_tb)
