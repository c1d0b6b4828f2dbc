"""The per-account limit on password logins: whatever the address, an account takes so many tries.

The per-address rate limit alone lets a botnet (or a proxy-header trick) try one account's password
from thousands of addresses. Here each password login of an email is counted before its password is
checked, so however many arrive at once, at most ``max_failures`` are checked in a window; past that,
logins of that email answer 429 with ``Retry-After`` until the window ends. A successful login clears
the count. An unknown email is counted exactly like a known one: the answers tell nothing about which
accounts exist.
"""

from __future__ import annotations

import hashlib
import logging

from windi_chat.errors import RateLimitedError
from windi_chat.stores import CountingStore

__all__ = ("LoginAttempts",)

logger = logging.getLogger("windi_chat.login_attempts")

LOCKED = "Too many wrong passwords for this account; try again later"


class LoginAttempts:
    """Counts password logins per normalised email in the login rate-limit store."""

    def __init__(self, store: CountingStore, max_failures: int, window_seconds: int) -> None:
        self._store = store
        self._max_failures = max_failures
        self._window_seconds = window_seconds

    @staticmethod
    def _key(email: str) -> str:
        # A digest, so the store (perhaps a shared Redis) holds no one's address.
        return "login-attempts:" + hashlib.sha256(email.encode()).hexdigest()

    async def begin(self, email: str) -> int:
        """Count a login of ``email``; the seconds it stays locked, or 0 when it may be checked."""
        if not self._max_failures:
            return 0
        count, seconds_left = await self._store.increment(self._key(email), self._window_seconds)
        if count <= self._max_failures:
            return 0
        if count == self._max_failures + 1:
            logger.warning(
                "Password logins of one account locked for %ds after repeated failures", seconds_left
            )
        return seconds_left

    async def check(self, email: str) -> None:
        """Count a password check of a signed-in person (a password change, an account deletion).

        It shares the count of their logins: a token is no licence to guess its owner's password, nor
        to queue hashes for everyone else's logins. Refused with 429 while the account is locked.
        """
        locked_for = await self.begin(email)
        if locked_for:
            raise RateLimitedError(locked_for, detail=LOCKED)

    async def succeeded(self, email: str) -> None:
        """The password was right: its earlier failures no longer count."""
        if self._max_failures:
            await self._store.delete(self._key(email))
