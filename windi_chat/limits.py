"""What one person may take of a process, shared by all of their sockets and their REST requests.

A limit per socket multiplies with the number of sockets; these count per person instead. Each is a
dict lookup and a little arithmetic, cheap enough to run on every send and typing frame. Entries that
have nothing left to remember are dropped, so memory follows the people active right now.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

from windi_chat.config import Settings
from windi_chat.metrics import METERS, REFUSED_SENDS
from windi_chat.sockets import FrameRateLimiter

__all__ = ("PersonLimits", "SendLimiter", "SendRefused", "SocketQuota", "TypingThrottle")

# Past this many remembered people, a sweep drops the ones whose buckets have refilled.
_SWEEP_ABOVE = 10_000


@dataclass(frozen=True, slots=True)
class SendRefused:
    """A send over the person's rate: when to try again, and whether they kept going regardless."""

    retry_after: float
    exhausted: bool


class SendLimiter:
    """A token bucket per person: bursts of ``burst`` sends pass, a sustained rate above ``rate`` does not.

    The bucket is the socket's frame limiter, kept per person: refused sends draw on its patience
    (``burst`` refused sends, refilled at one a second), and a person who exhausts it keeps going after
    being told to stop, so the socket that carried the send is closed.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[int, FrameRateLimiter] = {}
        self._last_sweep = time.monotonic()

    def take(self, user_id: int) -> SendRefused | None:
        """Spend one send of the person's allowance; None when it passes."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            self._sweep()
            bucket = self._buckets[user_id] = FrameRateLimiter(self._rate, self._burst)
        if bucket.allow():
            return None
        if METERS.on:
            REFUSED_SENDS.inc()
        return SendRefused(bucket.retry_after, bucket.exhausted)

    def _sweep(self) -> None:
        now = time.monotonic()
        if len(self._buckets) < _SWEEP_ABOVE or now - self._last_sweep < 1:
            return
        self._last_sweep = now
        # A bucket idle this long has refilled its sends and its patience: forgetting it is free.
        full_after = self._burst / min(self._rate, 1.0)
        for user_id in [u for u, b in self._buckets.items() if now - b.last_used >= full_after]:
            del self._buckets[user_id]


class TypingThrottle:
    """At most one ``typing`` event per person per chat every ``interval`` seconds, whatever the sockets."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[tuple[int, int], float] = {}

    def allow(self, chat_id: int, user_id: int) -> bool:
        if self._interval <= 0:
            return True
        now = time.monotonic()
        key = (chat_id, user_id)
        if now - self._last.get(key, -math.inf) < self._interval:
            return False
        if len(self._last) >= _SWEEP_ABOVE:
            self._last = {k: t for k, t in self._last.items() if now - t < self._interval}
        self._last[key] = now
        return True


class SocketQuota:
    """Open sockets per person in this process, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: Counter[int] = Counter()

    def acquire(self, user_id: int) -> bool:
        """Count one more socket of the person, unless they already hold ``limit``."""
        if self._open[user_id] >= self._limit:
            return False
        self._open[user_id] += 1
        return True

    def release(self, user_id: int) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]


@dataclass(frozen=True, slots=True)
class PersonLimits:
    """The per-person limits of one process, built from the settings."""

    sends: SendLimiter
    typing: TypingThrottle
    sockets: SocketQuota

    @classmethod
    def of(cls, settings: Settings) -> PersonLimits:
        return cls(
            SendLimiter(settings.send_rate, settings.send_burst),
            TypingThrottle(settings.typing_interval),
            SocketQuota(settings.ws_max_sockets_per_user),
        )
