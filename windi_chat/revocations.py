"""Whether an access token's session is still live, without a database round trip per request.

Each process asks the database once per session, remembers the answer, and hears of revocations as
events on :data:`~windi_chat.events.SESSIONS_CHANNEL` (the delivery backend spans processes). Memory is
trusted only while that channel is known to deliver: after a lost event (the backend dropped, a
publish failed) the gate forgets what it knew, asks the database on every check, and trusts memory
again only once a probe it publishes comes back through the backend and it has re-read the recent
revocations from the database (re-publishing them for processes whose own publish may have failed).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.database import unit_of_work
from windi_chat.events import KIND_REVOKED, SESSIONS_CHANNEL, revocation_payload
from windi_chat.lifecycle import BackgroundPlugin
from windi_chat.models import LoginSession, utcnow

__all__ = ("SessionGate",)

logger = logging.getLogger("windi_chat.revocations")

KIND_PROBE = ord("P")
# Probes are re-sent at most this often while memory is not trusted.
PROBE_INTERVAL_SECONDS = 1.0
# How often expired entries are dropped from the revoked set.
SWEEP_INTERVAL_SECONDS = 60.0

RevocationListener = Callable[[str], None]


class SessionGate(BackgroundPlugin):
    """The live/revoked state of sessions as this process knows it; a plugin, to start after channels.

    ``forget_after`` is the access-token lifetime: once it has passed since a revocation, every token of
    that session has expired anyway and its id can be dropped, so the revoked set stays bounded.
    ``capacity`` bounds the live sessions remembered (least recently used go first, and are asked
    about again); each is asked about again ``recheck_after`` seconds after the last answer, which
    bounds how long anything the events cannot tell (an account deleted by hand) goes unnoticed.
    """

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        channels: ChannelsPlugin,
        forget_after: timedelta,
        capacity: int,
        recheck_after: float,
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self._forget_after = forget_after
        self._capacity = capacity
        self._recheck_after = recheck_after
        # session id -> (user id, when the database said so)
        self._live: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._revoked: dict[str, float] = {}  # session id -> monotonic time after which it can be dropped
        self._listeners: list[RevocationListener] = []
        self._trusted = False
        self._trust_regained = asyncio.Event()  # set, and replaced, whenever memory becomes trusted
        self._epoch = 0  # bumped on every loss, so an answer read before it is not remembered after it
        self._probe = b""
        self._probed_at = 0.0
        self._swept_at = time.monotonic()
        self._subscriber: Subscriber | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Wiring ----------------------------------------------------------------------------------------

    def on_revocation(self, listener: RevocationListener) -> None:
        """Call ``listener(session_id)`` for every session revoked, on any process."""
        self._listeners.append(listener)

    async def _start(self) -> None:
        self._subscriber = await self._channels.subscribe([SESSIONS_CHANNEL])
        self._task = asyncio.get_running_loop().create_task(self._listen(self._subscriber))
        self._send_probe()

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        # A re-read in flight finishes: cancelled mid-query, its connection would be left unclosed.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._subscriber is not None:
            await self._channels.unsubscribe(self._subscriber)

    # The check -------------------------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether memory is complete: revocations are known to reach this process."""
        return self._trusted

    async def confirm_delivery(self) -> None:
        """Return once events are known to reach this process through the backend, probing it if need be.

        Callers bound the wait (``anyio.move_on_after``): while the backend is down it never returns.
        """
        while not self._trusted:
            self._send_probe()
            await self._trust_regained.wait()

    async def is_live(self, session_id: str, user_id: int) -> bool:
        """Whether ``session_id`` is a session of ``user_id`` that was not revoked."""
        now = time.monotonic()
        if now - self._swept_at > SWEEP_INTERVAL_SECONDS:
            self._forget_expired(now)
        if session_id in self._revoked:
            return False
        if self._trusted:
            known = self._live.get(session_id)
            if known is not None and now - known[1] < self._recheck_after:
                self._live.move_to_end(session_id)
                return known[0] == user_id
        else:
            self._send_probe()
        epoch = self._epoch
        owner, revoked = await self._read(session_id)
        if revoked:
            self._remember_revoked([session_id])
        live = owner == user_id and not revoked and session_id not in self._revoked
        if live and self._trusted and epoch == self._epoch:
            self._live[session_id] = (user_id, now)
            self._live.move_to_end(session_id)
            if len(self._live) > self._capacity:
                self._live.popitem(last=False)
        return live

    async def _read(self, session_id: str) -> tuple[int | None, bool]:
        async with unit_of_work(self._sessions) as db:
            row = (
                await db.execute(
                    select(LoginSession.user_id, LoginSession.revoked_at).where(LoginSession.id == session_id)
                )
            ).one_or_none()
        return (None, False) if row is None else (row.user_id, row.revoked_at is not None)

    # Revocations -----------------------------------------------------------------------------------

    def _remember_revoked(self, session_ids: Iterable[str]) -> None:
        forget_at = time.monotonic() + self._forget_after.total_seconds()
        for session_id in session_ids:
            self._revoked[session_id] = forget_at
            self._live.pop(session_id, None)

    def _forget_expired(self, now: float) -> None:
        self._swept_at = now
        for session_id in [sid for sid, forget_at in self._revoked.items() if forget_at < now]:
            del self._revoked[session_id]

    def _revoke(self, session_ids: list[str]) -> None:
        self._remember_revoked(session_ids)
        for session_id in session_ids:
            for listener in self._listeners:
                listener(session_id)

    async def _listen(self, subscriber: Subscriber) -> None:
        async for payload in subscriber.iter_events():
            if not payload:
                continue
            if payload[0] == KIND_REVOKED:
                self._revoke(payload[1:].decode().split())
            elif payload[0] == KIND_PROBE and payload[1:] == self._probe:
                if self._epoch == 0:  # start-up: nothing was remembered, so nothing can be stale
                    self._trust()
                else:
                    self._spawn(self._regain_trust(self._epoch))

    # Losing and regaining trust --------------------------------------------------------------------

    def events_lost(self, channels: Iterable[str] | None) -> None:
        """Revocations may have been missed: forget the live sessions and stop trusting memory."""
        if channels is not None and SESSIONS_CHANNEL not in channels:
            return
        if self._trusted:
            logger.warning("Revocations may have been missed: checking sessions in the database")
        self._trusted = False
        self._epoch += 1
        self._live.clear()
        self._probe = b""
        self._send_probe()

    def _trust(self) -> None:
        self._trusted = True
        self._trust_regained.set()
        self._trust_regained = asyncio.Event()

    def _send_probe(self) -> None:
        """Publish a probe that proves, when it comes back, that the channel delivers again."""
        now = time.monotonic()
        # Also after a loss: a failed publish reports one, and probing at once would loop.
        if now - self._probed_at < PROBE_INTERVAL_SECONDS:
            return
        self._probe = secrets.token_hex(8).encode()
        self._probed_at = now
        try:
            self._channels.publish(bytes([KIND_PROBE]) + self._probe, SESSIONS_CHANNEL)
        except RuntimeError:  # the plugin is not running (start-up or shutdown): the next check retries
            self._probe = b""

    async def _regain_trust(self, epoch: int) -> None:
        """Re-read the revocations recent enough to matter, share them, then trust memory again."""
        since = utcnow() - self._forget_after
        try:
            async with unit_of_work(self._sessions) as db:
                revoked = list(
                    await db.scalars(select(LoginSession.id).where(LoginSession.revoked_at > since))
                )
        except Exception as exc:
            logger.warning(
                "Re-reading revocations failed (%s); still checking the database", type(exc).__name__
            )
            self._probe = b""
            return
        self._remember_revoked(revoked)
        if revoked:
            # A process whose own publish failed had no other way to reach the rest.
            self._channels.publish(revocation_payload(revoked), SESSIONS_CHANNEL)
        if epoch == self._epoch and not self._trusted:
            self._trust()
            logger.info(
                "Revocations re-read (%d recent); sessions are checked from memory again", len(revoked)
            )

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
