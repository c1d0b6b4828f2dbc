"""The store behind the login rate limit: shared through Redis, and per process while Redis is down.

A rate limit protects login; it must not take login down with it. While the shared store cannot be
reached, :class:`FailSafeStore` counts in this process instead (so for that time each process allows
the limit on its own) and asks the shared store again every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore

__all__ = ("REDIS_SCHEMES", "SHARED_STORE_RETRY_SECONDS", "FailSafeStore", "create_shared_store")

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


def create_shared_store(url: str) -> Store | None:
    """A store every process shares (for login rate limits) when delivery runs on Redis."""
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
    shared = RedisStore(redis, namespace="WINDI_CHAT", handle_client_shutdown=True)
    return FailSafeStore(shared, errors=(RedisError, OSError))


class FailSafeStore(Store):
    """A shared store that falls back to a store of this process while the shared one fails.

    Only ``errors`` (the shared store's connection failures) switch to the fallback; the switch and
    the return are each logged once, and a lasting outage at most once a minute.
    """

    def __init__(
        self,
        shared: Store,
        errors: tuple[type[BaseException], ...],
        retry_seconds: float = SHARED_STORE_RETRY_SECONDS,
    ) -> None:
        self._shared = shared
        self._local = MemoryStore()
        self._errors = errors
        self._retry_seconds = retry_seconds
        self._skip_until = 0.0
        self._failing_since: float | None = None
        self._warned_at = 0.0

    async def _use(self, operation: Callable[[Store], Awaitable[T]]) -> T:
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._shared.__aexit__(exc_type, exc_val, exc_tb)
