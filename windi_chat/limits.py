"""What one person may take of a process, shared by all of their sockets and their REST requests.

A limit per socket multiplies with the number of sockets; these count per person instead. Each is a
dict lookup and a little arithmetic, cheap enough to run on every send and typing frame. Entries that
have nothing left to remember are dropped, so memory follows the people active right now.
"""

from __future__ import annotations

import math
import time
from collections import Counter as Tally
from dataclasses import dataclass

from prometheus_client import Counter

from windi_chat.config import Settings
from windi_chat.errors import RateLimitedError
from windi_chat.metrics import METERS, REFUSED_READS, REFUSED_SEARCHES, REFUSED_SENDS
from windi_chat.sockets import FrameRateLimiter

__all__ = (
    "READS_LIMITED",
    "SEARCHES_LIMITED",
    "PersonLimits",
    "SendLimiter",
    "SendRefused",
    "SocketQuota",
    "TypingThrottle",
)

READS_LIMITED = "Too many read markers; slow down"
SEARCHES_LIMITED = "Too many searches; slow down"

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

    def __init__(self, rate: float, burst: int, refusals: Counter = REFUSED_SENDS) -> None:
        self._refusals = refusals  # the metric a refusal counts in
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
            self._refusals.inc()
        return SendRefused(bucket.retry_after, bucket.exhausted)

    def check(self, user_id: int, detail: str) -> None:
        """Spend one of the person's allowance, or refuse with :class:`RateLimitedError`."""
        refused = self.take(user_id)
        if refused is not None:
            raise RateLimitedError(refused.retry_after, refused.exhausted, detail)

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
        self._open: Tally[int] = Tally()

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
    # Read markers: each is a transaction, so a person's sockets and requests share one allowance too.
    reads: SendLimiter
    searches: SendLimiter
    typing: TypingThrottle
    sockets: SocketQuota

    @classmethod
    def of(cls, settings: Settings) -> PersonLimits:
        return cls(
            SendLimiter(settings.send_rate, settings.send_burst),
            SendLimiter(settings.send_rate, settings.send_burst, REFUSED_READS),
            SendLimiter(settings.search_rate, settings.search_burst, REFUSED_SEARCHES),
            TypingThrottle(settings.typing_interval),
            SocketQuota(settings.ws_max_sockets_per_user),
        )
