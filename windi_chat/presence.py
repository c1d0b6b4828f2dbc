"""Who is online: a person is online while at least one of their gateways is open, on any process.

The gateway tells :class:`Presence` of each of its sockets::

    await presence.opened(user_id)   # a gateway of user_id is open (call once per socket)
    await presence.closed(user_id)   # ...and closed (once per opened, whatever the reason)

and the chat views ask :meth:`Presence.is_online`. When a person comes online, or goes offline
``WINDI_PRESENCE_GRACE_SECONDS`` after their last gateway closed (a reconnect within the grace changes
nothing), ``users.last_seen_at`` is written and a ``presence`` frame is published once, to all their
chats in one publish, through :meth:`EventBus.presence` (header ``O<user id>``); only gateways forward
it. Nothing is published while nothing changes, so the cost is one publish per real transition.

Processes share what they hold on :data:`~windi_chat.events.PRESENCE_CHANNEL`, as
``<kind><origin>\n<user ids>``: ``H`` every ``WINDI_PRESENCE_HEARTBEAT_SECONDS`` with everyone open
here (and, negated, everyone in their grace here); ``U`` opened, ``L`` in grace, ``D`` dropped (no longer
held here), ``X`` dropped and announced offline, ``Q`` a new process asks for heartbeats.
A process silent for the grace plus two heartbeats is taken for dead; the live process with the
lowest origin then announces its people offline, as of when it was last heard. When an offline
announcement was wrong (two processes racing, or one wrongly taken for dead), a process that still
holds the person hears the ``X`` and announces them online again, so the last word is right.

The app provides the object as the ``presence`` dependency.

A gateway that shares several chats with someone hears each change once per shared chat (the same
frame on each chat's channel): :class:`RecentPresence` tells it which copies it has already forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.database import unit_of_work
from windi_chat.events import PRESENCE_CHANNEL, EventBus
from windi_chat.frames import PresenceFrame
from windi_chat.lifecycle import BackgroundPlugin
from windi_chat.models import utcnow
from windi_chat.presence_sql import chats_of, mark_seen

__all__ = ("Presence", "RecentPresence")

logger = logging.getLogger("windi_chat.presence")

# Heartbeats a process may miss before it is taken for dead (on top of the grace).
MISSED_HEARTBEATS = 2
# Presence frames a gateway remembers to drop their copies from other shared chats. The copies of one
# change are published together, so they arrive close together; a few suffice, and cost little.
RECENT_PRESENCE = 8


@dataclass(slots=True)
class _Origin:
    """What another process last told of its people."""

    heard: float  # monotonic time of its last announcement
    heard_at: datetime  # ...and the wall-clock time, the last_seen of its people if it died
    open: set[int] = field(default_factory=set)
    lingering: set[int] = field(default_factory=set)


class Presence(BackgroundPlugin):
    """The online state of people, shared by every process; a plugin, to start after channels."""

    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        channels: ChannelsPlugin,
        events: EventBus,
        grace_seconds: float,
        heartbeat_seconds: float,
    ) -> None:
        self._sessions = sessions
        self._channels = channels
        self._events = events
        self._grace = grace_seconds
        self._heartbeat = heartbeat_seconds
        self._origin = secrets.token_hex(6)
        self._open: dict[int, int] = {}  # user id -> gateways open here
        self._lingering: dict[int, tuple[datetime, asyncio.TimerHandle]] = {}  # in their grace here
        self._others: dict[str, _Origin] = {}
        self._subscriber: Subscriber | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    # Wiring ----------------------------------------------------------------------------------------

    async def _start(self) -> None:
        self._subscriber = await self._channels.subscribe([PRESENCE_CHANNEL])
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._listen(self._subscriber)), loop.create_task(self._beat())]
        self._announce(b"Q")

    async def _stop(self) -> None:
        """Record when the people still here were last seen; other processes expire them after the grace."""
        self._stopped = True  # a gateway closing later starts no grace: nothing would end it
        for task in self._loops:
            task.cancel()
        for _closed_at, timer in self._lingering.values():
            timer.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        held = [*self._open, *self._lingering]
        self._open.clear()
        self._lingering.clear()
        if held:
            try:
                async with unit_of_work(self._sessions) as db:
                    await mark_seen(db, held, utcnow())
                    await db.commit()
            except Exception as exc:
                logger.warning("Could not record when people were last seen: %s", type(exc).__name__)
        if self._subscriber is not None:
            await self._channels.unsubscribe(self._subscriber)

    # The gateway's calls ---------------------------------------------------------------------------

    async def opened(self, user_id: int) -> None:
        """A gateway of ``user_id`` opened on this process."""
        count = self._open.get(user_id, 0)
        self._open[user_id] = count + 1
        if count:
            return
        lingering = self._lingering.pop(user_id, None)
        if lingering is not None:  # back within the grace: nothing changed for anyone
            lingering[1].cancel()
            self._announce(b"U", user_id)
            return
        online_elsewhere = self._held_elsewhere(user_id, lingering_too=True)
        self._announce(b"U", user_id)
        if not online_elsewhere:
            await self._went_online(user_id)

    async def closed(self, user_id: int) -> None:
        """A gateway of ``user_id`` closed; after the last one, the grace starts."""
        count = self._open.pop(user_id, 0)
        if count > 1:
            self._open[user_id] = count - 1
            return
        if count == 0 or self._stopped:  # not opened here, or shutting down: nothing to undo
            return
        timer = asyncio.get_running_loop().call_later(self._grace, self._grace_over, user_id)
        self._lingering[user_id] = (utcnow(), timer)
        self._announce(b"L", user_id)

    # The views' question ---------------------------------------------------------------------------

    def is_online(self, user_id: int) -> bool:
        """Whether ``user_id`` counts as online, on any process, as this process knows it."""
        return self.here(user_id) or self._held_elsewhere(user_id, lingering_too=True)

    def here(self, user_id: int) -> bool:
        """Whether a gateway of ``user_id`` is open on this process, or closed here within the grace."""
        return user_id in self._open or user_id in self._lingering

    def _held_elsewhere(self, user_id: int, lingering_too: bool) -> bool:
        return any(
            user_id in other.open or (lingering_too and user_id in other.lingering)
            for other in self._others.values()
        )

    # Transitions -----------------------------------------------------------------------------------

    def _grace_over(self, user_id: int) -> None:
        self._spawn(self._end_grace(user_id))

    async def _end_grace(self, user_id: int) -> None:
        lingering = self._lingering.pop(user_id, None)
        if lingering is None:
            return
        # Before any frames: every process then counts them offline by the time its gateways tell so.
        self._announce(b"D", user_id)
        if self._held_elsewhere(user_id, lingering_too=False):
            return
        await self._went_offline([user_id], lingering[0])
        # After the frames are queued: a process that still holds them answers with ``online`` later.
        self._announce(b"X", user_id)
        if self.here(user_id):  # back while the offline was being told: the last word must be online
            await self._went_online(user_id)

    async def _went_online(self, user_id: int) -> None:
        await self._publish([user_id], online=True, at=utcnow())

    async def _went_offline(self, user_ids: Collection[int], at: datetime) -> None:
        await self._publish(user_ids, online=False, at=at)

    async def _publish(self, user_ids: Collection[int], online: bool, at: datetime) -> None:
        """Record ``at`` as last seen and tell each person's chats, once committed."""
        try:
            async with unit_of_work(self._sessions) as db:
                await mark_seen(db, user_ids, at)
                for user_id in user_ids:
                    frame = PresenceFrame(user_id=user_id, online=online, last_seen=at)
                    self._events.presence(db, await chats_of(db, user_id), frame)
                await db.commit()
        except Exception as exc:  # the gateway must open and close whatever the database does
            logger.warning(
                "Presence of %d people not recorded or announced: %s", len(user_ids), type(exc).__name__
            )

    # Between processes -----------------------------------------------------------------------------

    def _announce(self, kind: bytes, *user_ids: int) -> None:
        payload = kind + self._origin.encode() + b"\n" + " ".join(map(str, user_ids)).encode()
        try:
            self._channels.publish(payload, PRESENCE_CHANNEL)
        except RuntimeError:  # the plugin is not running (start-up or shutdown): heartbeats catch up
            logger.debug("Presence announcement not sent: delivery is not running")

    def _send_heartbeat(self) -> None:
        self._announce(b"H", *self._open, *[-user_id for user_id in self._lingering])

    async def _beat(self) -> None:
        while True:
            self._send_heartbeat()
            await asyncio.sleep(self._heartbeat)
            await self._expire_others()

    async def _listen(self, subscriber: Subscriber) -> None:
        async for payload in subscriber.iter_events():
            try:
                self._heard(payload)
            except ValueError:
                logger.warning("Ignored a presence announcement that is not one of this server")

    def _heard(self, payload: bytes) -> None:
        header, _, body = payload.partition(b"\n")
        kind, origin = header[:1], header[1:].decode()
        if origin == self._origin or not kind:
            return
        user_ids = [int(word) for word in body.split()]
        other = self._others.get(origin)
        if other is None:
            other = self._others[origin] = _Origin(time.monotonic(), utcnow())
        other.heard, other.heard_at = time.monotonic(), utcnow()
        if kind == b"H":  # negative ids: in their grace there
            other.open = {user_id for user_id in user_ids if user_id > 0}
            other.lingering = {-user_id for user_id in user_ids if user_id < 0}
        elif kind == b"Q":
            self._send_heartbeat()
        for user_id in user_ids if kind in (b"U", b"L", b"D", b"X") else ():
            other.open.discard(user_id)
            other.lingering.discard(user_id)
            if kind == b"U":
                other.open.add(user_id)
            elif kind == b"L":
                other.lingering.add(user_id)
            elif kind == b"X":
                self._offline_announced(user_id)

    def _offline_announced(self, user_id: int) -> None:
        """Another process told ``user_id``'s chats they went offline."""
        lingering = self._lingering.pop(user_id, None)
        if lingering is not None:  # already told: this process's grace need not end in a second frame
            lingering[1].cancel()
        if user_id in self._open:  # wrongly: they are here
            self._announce(b"U", user_id)
            self._spawn(self._went_online(user_id))

    async def _expire_others(self) -> None:
        """Drop processes silent for too long; the lowest live origin announces their people offline."""
        deadline = time.monotonic() - self._grace - MISSED_HEARTBEATS * self._heartbeat
        dead = {origin: other for origin, other in self._others.items() if other.heard < deadline}
        if not dead:
            return
        for origin in dead:
            del self._others[origin]
        if min(self._others, default=self._origin) < self._origin:
            return  # another live process announces them
        for other in dead.values():
            gone = [user_id for user_id in other.open | other.lingering if not self.is_online(user_id)]
            if gone:
                logger.info("A process went silent: %d people announced offline", len(gone))
                await self._went_offline(gone, other.heard_at)
                self._announce(b"X", *gone)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class RecentPresence:
    """The last few presence frames one gateway forwarded, so their copies from other chats are dropped."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: deque[str] = deque(maxlen=RECENT_PRESENCE)

    def fresh(self, frame: str) -> bool:
        """Whether ``frame`` (a presence event's frame text) is new to this gateway; it is remembered."""
        if frame in self._frames:
            return False
        self._frames.append(frame)
        return True
