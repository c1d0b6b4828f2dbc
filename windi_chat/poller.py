"""Degraded mode: while the delivery backend is down, a process serves its sockets from the database.

The database holds every message, marker and membership, so a lost backend need not stop the chat:
sockets stay open, sends commit and are acked, and about once a second :class:`DeliveryPoller` reads,
in one statement each for all the chats this process's sockets watch, the messages past what each
socket has (by seq), the messages changed since (by rev), the members and their read markers, and
which of the sockets' sessions were revoked. From these it queues message and ``message_updated``
events (``windi_chat.poll_queue``), read, ``member_added`` and ``member_removed`` events on the sockets
(a socket whose user is no longer a member gets its removal and closes with 4403), and closes the
sockets of revoked sessions with 4401. Typing is not stored, so it is lost while the backend is down.

A probe published on the sessions channel tells when the backend delivers again; then the poller
reads one last batch and hands each socket back to live delivery at a seam (see ``windi_chat.seam``),
so nothing is missed or doubled. The poller runs only in degraded mode: live delivery pays nothing
for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat import poll_sql
from windi_chat.database import unit_of_work
from windi_chat.errors import DomainError
from windi_chat.events import SESSIONS_CHANNEL, event_payload
from windi_chat.frames import MemberAddedFrame, MemberRemovedFrame, ReadEventFrame
from windi_chat.metrics import DELIVERY_OUTAGES, METERS
from windi_chat.poll_queue import PolledRows, queue_rows, seqs_by_chat
from windi_chat.seam import Mode, polled, seam_end

if TYPE_CHECKING:
    from windi_chat.connection import ChatConnection
    from windi_chat.sockets import SocketRegistry

__all__ = ("DeliveryPoller",)

logger = logging.getLogger("windi_chat.delivery")

POLL_ROWS = 1000  # messages read per statement; a chat with more waiting is read again at once
KIND_PROBE = ord("D")  # on the sessions channel, which every process listens to and ignores this on
MAX_PROBES = 16  # probes awaited at once; a slower backend than this many rounds counts as down


class DeliveryPoller:
    """The process's degraded mode: entered when live events may be lost, left when the backend is back."""

    def __init__(
        self,
        registry: SocketRegistry,
        channels: ChannelsPlugin,
        sessions: Callable[[], AsyncSession],
        interval: float,
    ) -> None:
        self._registry = registry
        self._channels = channels
        self._sessions = sessions
        self._interval = interval
        self._members: dict[int, dict[int, int]] = {}  # chat id -> member id -> read marker, as last read
        self._task: asyncio.Task[None] | None = None
        self._epoch = 0  # bumped on every loss, so a return to live delivery read before it is abandoned
        self._probes: set[bytes] = set()
        self._probe_back = False
        self._generations = itertools.count()
        self._failing = False
        self._resuming = False

    @property
    def degraded(self) -> bool:
        return self._task is not None

    def events_lost(self, channels: Iterable[str] | None) -> None:
        """Live events may have been lost: serve every socket from the database until the backend is back."""
        self._epoch += 1
        self._probes.clear()
        self._probe_back = False
        if self._task is not None and not self._resuming:
            return  # every socket polls already (this runs for every event lost while down)
        self._registry.degraded = True
        for connection in self._registry:
            connection.feed.poll()
        if self._task is None:
            if METERS.on:
                DELIVERY_OUTAGES.inc()
            logger.warning(
                "Live delivery is down: serving sockets from the database every %gs until it is back",
                self._interval,
            )
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        probes = await self._channels.subscribe([SESSIONS_CHANNEL])
        listener = asyncio.get_running_loop().create_task(self._hear_probes(probes))
        try:
            while not await self._round():
                pass
        finally:
            listener.cancel()
            await self._channels.unsubscribe(probes)

    async def _round(self) -> bool:
        """Deliver what is new; True once live delivery has taken over again."""
        more = False
        try:
            more = await self._deliver()
            if self._probe_back and await self._registry.subscribe_again() and await self._resume():
                return True
        except Exception as exc:
            if not self._failing:  # once until a round succeeds: the database may be down as well
                level = logging.WARNING if isinstance(exc, DomainError) else logging.ERROR
                logger.log(
                    level, "Delivery from the database failed: %s", exc, exc_info=level == logging.ERROR
                )
            self._failing = True
        else:
            self._failing = False
        self._send_probe()
        if not more:
            await asyncio.sleep(self._interval)
        return False

    # Delivering from the database ------------------------------------------------------------------

    async def _deliver(self) -> bool:
        """Queue on every polled socket what is new in its chat; True when more messages are waiting."""
        watched: dict[int, list[ChatConnection]] = {}
        for connection in self._registry:
            if connection.feed.mode is not Mode.LIVE:
                watched.setdefault(connection.chat_id, []).append(connection)
        self._members = {chat_id: known for chat_id, known in self._members.items() if chat_id in watched}
        if not watched:
            return False
        # Sockets that follow seqs get new messages in seq order from one read; every socket gets the
        # changes, in rev order, from another.
        seq_cursors = {
            chat_id: min(c.feed.seqs.cursor for c in sockets if not c.feed.by_rev)
            for chat_id, sockets in watched.items()
            if any(not c.feed.by_rev for c in sockets)
        }
        rev_cursors = {
            chat_id: min(c.feed.revs.cursor for c in sockets) for chat_id, sockets in watched.items()
        }
        async with unit_of_work(self._sessions) as session:
            added = await poll_sql.messages_after(session, seq_cursors, POLL_ROWS) if seq_cursors else []
            changed = await poll_sql.changes_after(session, rev_cursors, POLL_ROWS)
            reactions = await poll_sql.reactions_of(session, seqs_by_chat([*added, *changed]))
            members = await poll_sql.members_of(session, watched.keys())
            revoked = await poll_sql.revoked_among(
                session, {c.session_id for s in watched.values() for c in s}
            )
        for chat_id, sockets in watched.items():
            now = members.get(chat_id, {})
            rows = PolledRows(reactions, min(now.values(), default=0))
            mine = [row for row in added if row.chat_id == chat_id]
            queue_rows(sockets, rows, mine, [row for row in changed if row.chat_id == chat_id])
            self._queue_membership(chat_id, sockets, self._members.get(chat_id), now)
            self._members[chat_id] = now
        for session_id in revoked:
            self._registry.session_revoked(session_id)
        return len(added) >= POLL_ROWS or len(changed) >= POLL_ROWS

    @staticmethod
    def _queue_membership(
        chat_id: int, sockets: list[ChatConnection], before: dict[int, int] | None, now: dict[int, int]
    ) -> None:
        """Members added or removed and markers moved since the last read (none on the first read)."""
        events: list[bytes] = []
        removed: set[int] = set()
        if before is not None:
            all_read_seq = min(now.values(), default=0)
            for user_id in sorted(now.keys() - before.keys()):
                events.append(event_payload(b"-", MemberAddedFrame(chat_id=chat_id, user_id=user_id)))
            for user_id, seq in now.items():
                if seq > before.get(user_id, seq):
                    frame = ReadEventFrame(
                        chat_id=chat_id, user_id=user_id, seq=seq, all_read_seq=all_read_seq
                    )
                    events.append(event_payload(b"-", frame))
            removed = before.keys() - now.keys()
            events += [_removal(chat_id, user_id) for user_id in sorted(removed)]
        for connection in sockets:
            for event in events:
                connection.enqueue(polled(event))
            if connection.user_id not in now and connection.user_id not in removed:
                # Removed before the first read: the other members missed it, but this socket must close.
                connection.enqueue(polled(_removal(chat_id, connection.user_id)))

    # Back to live delivery -------------------------------------------------------------------------

    async def _resume(self) -> bool:
        """Hand every socket back to live delivery at a seam; False when the backend was lost again."""
        self._resuming = True
        try:
            return await self._seam()
        finally:
            self._resuming = False
            if self._task is not None:  # not resumed: the sockets holding live messages poll again
                for connection in self._registry:
                    connection.feed.poll()

    async def _seam(self) -> bool:
        epoch = self._epoch
        waiting = [c for c in self._registry if c.feed.mode is not Mode.LIVE]
        while waiting:
            generation = next(self._generations)
            for connection in waiting:
                connection.feed.resume(generation)
            # Read after live events were known to flow: each message is in this batch, or comes live.
            while await self._deliver():
                pass
            if epoch != self._epoch:
                return False
            for connection in waiting:
                connection.enqueue(seam_end(generation))
            # Sockets opened while the batch was read start polling: they need a batch of their own.
            waiting = [c for c in self._registry if c.feed.mode is Mode.POLLING]
        self._task = None
        self._registry.degraded = False
        self._members.clear()
        logger.warning("Live delivery is back: sockets are served live again")
        return True

    # Probing the backend ---------------------------------------------------------------------------

    def _send_probe(self) -> None:
        if len(self._probes) >= MAX_PROBES:
            self._probes.clear()
        probe = secrets.token_hex(8).encode()
        self._probes.add(probe)
        try:
            self._channels.publish(bytes([KIND_PROBE]) + probe, SESSIONS_CHANNEL)
        except RuntimeError:  # the plugin is not running (shutdown): nothing to resume
            self._probes.discard(probe)

    async def _hear_probes(self, subscriber: Subscriber) -> None:
        async for payload in subscriber.iter_events():
            if payload[:1] == bytes([KIND_PROBE]) and payload[1:] in self._probes:
                self._probe_back = True


def _removal(chat_id: int, user_id: int) -> bytes:
    return event_payload(b"R%d" % user_id, MemberRemovedFrame(chat_id=chat_id, user_id=user_id))
