"""The open sockets of a process, and the limits every socket shares.

:class:`SocketRegistry` subscribes sockets to their chats' events and closes them when they must catch
up (a stuck client, shutdown); :class:`FrameRateLimiter` bounds what one socket may send. Chat sockets
that may have missed live events stay open: the ``DeliveryPoller`` serves them from the database.
Gateways (``/ws``) are closed with 1013 instead, and refused while that lasts: they catch up with
``sync`` when live delivery is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber

from windi_chat.delivery import GuardedBackend
from windi_chat.events import chat_channel
from windi_chat.turns import Turns

if TYPE_CHECKING:
    from windi_chat.connection import ChatConnection
    from windi_chat.connection_core import SocketCore
    from windi_chat.gateway import Gateway

__all__ = ("FrameRateLimiter", "SocketRegistry")

logger = logging.getLogger("windi_chat.realtime")

# Close codes a client acts on (see docs/protocol.md).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # flooding
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013  # fell too far behind, or the database is unavailable: reconnect with after_seq
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429  # the person already holds WINDI_WS_MAX_SOCKETS_PER_USER sockets here

BURST_FRAMES = 50


class FrameRateLimiter:
    """A token bucket: bursts of ``burst`` frames pass, a sustained rate above ``rate`` does not.

    Refused frames draw on a second bucket of patience; a socket that exhausts it keeps flooding and is
    closed.
    """

    def __init__(self, rate: float, burst: int = BURST_FRAMES) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = float(burst)
        self._patience = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._patience = min(self._burst, self._patience + elapsed)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._patience -= 1
        return False

    @property
    def exhausted(self) -> bool:
        return self._patience < 0

    @property
    def retry_after(self) -> float:
        """Seconds until the next frame would pass, as of the last one."""
        return max(0.0, (1 - self._tokens) / self._rate)

    @property
    def last_used(self) -> float:
        """When a frame was last counted (``time.monotonic()``)."""
        return self._last


class SocketRegistry:
    """The open sockets of this process: subscribing them, and closing them when they must catch up.

    Subscribing and unsubscribing go through one lock: interleaved, Litestar's channels plugin can
    unsubscribe the backend from a channel that a new socket has just joined, and that socket then
    misses every event (https://github.com/litestar-org/litestar/issues/4894; the lock can go once
    that is fixed).
    """

    def __init__(self, channels: ChannelsPlugin, backend: GuardedBackend, send_timeout: float) -> None:
        self._channels = channels
        self._backend = backend
        self._send_timeout = send_timeout
        self._connections: set[ChatConnection] = set()
        self._gateways: set[Gateway] = set()
        self._subscription_lock = anyio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self.closing = False
        self._degraded = False
        self.turns = Turns()  # sockets with a backlog take turns at sending it

    def __len__(self) -> int:
        return len(self._connections) + len(self._gateways)

    def __iter__(self) -> Iterator[ChatConnection]:
        """The chat sockets (the ones the poller serves while live delivery is down)."""
        return iter(list(self._connections))

    def _everyone(self) -> list[SocketCore]:
        return [*self._connections, *self._gateways]

    @property
    def degraded(self) -> bool:
        """Set by the DeliveryPoller: new chat sockets are served from the database, gateways refused."""
        return self._degraded

    @degraded.setter
    def degraded(self, degraded: bool) -> None:
        self._degraded = degraded
        if degraded:
            for gateway in list(self._gateways):
                self._spawn(gateway.close(CLOSE_TRY_AGAIN, "live delivery is down; sync again later"))

    async def subscribe(self, chat_id: int) -> Subscriber:
        """A subscriber to the chat's events (if the backend could not subscribe, the poller serves it)."""
        async with self._subscription_lock:
            return await self._channels.subscribe(chat_channel(chat_id))

    async def subscribe_again(self) -> bool:
        """Subscribe the channels the backend refused while it was down; whether all are subscribed."""
        async with self._subscription_lock:
            return await self._backend.subscribe_again()

    async def unsubscribe(self, subscriber: Subscriber, chat_id: int) -> None:
        with anyio.CancelScope(shield=True):
            async with self._subscription_lock:
                await self._leave(subscriber, [chat_channel(chat_id)])

    async def subscribe_many(self, channels: Iterable[str]) -> Subscriber:
        """One subscriber to the events of many channels (a gateway's)."""
        async with self._subscription_lock:
            return await self._channels.subscribe(list(channels))

    async def join(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Add channels to a subscriber, as ``ChannelsPlugin.subscribe`` does for a new one.

        The plugin has no way to grow an existing subscriber, so this does what its ``subscribe`` does,
        on the plugin's own table.
        """
        async with self._subscription_lock:
            table = self._channels._channels
            new = set()
            for channel in channels:
                listeners = table.setdefault(channel, set())
                if not listeners:
                    new.add(channel)
                listeners.add(subscriber)
            if new:
                await self._backend.subscribe(new)

    async def leave(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Take channels off a subscriber (all of them ends its stream)."""
        with anyio.CancelScope(shield=True):
            async with self._subscription_lock:
                await self._leave(subscriber, list(channels))

    async def _leave(self, subscriber: Subscriber, channels: list[str]) -> None:
        channels = [channel for channel in channels if channel in self._channels._channels]
        await self._channels.unsubscribe(subscriber, channels)
        # Litestar keeps an entry for every channel ever subscribed and walks them all on each
        # unsubscribe, so sockets opened to many chat ids (members or not) would grow both without
        # bound (https://github.com/litestar-org/litestar/issues/4867; this can go once it is fixed).
        for channel in channels:
            if not self._channels._channels.get(channel):
                self._channels._channels.pop(channel, None)

    def add(self, connection: ChatConnection) -> None:
        if self.degraded:
            connection.feed.poll()
        self._connections.add(connection)
        self._watch()

    def add_gateway(self, gateway: Gateway) -> None:
        self._gateways.add(gateway)
        self._watch()

    def discard_gateway(self, gateway: Gateway) -> None:
        self._gateways.discard(gateway)

    def _watch(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._close_stuck_sockets())

    async def _close_stuck_sockets(self) -> None:
        """Close the sockets whose client has not taken a frame within the send timeout.

        One sweep for the whole process is much cheaper than a timer around every frame sent; it stops
        when the last socket is gone and starts again with the next one. The same sweep closes the
        sockets whose token has expired (4401), within a second of the expiry.
        """
        while self._connections or self._gateways:
            await asyncio.sleep(min(1.0, self._send_timeout / 2))
            sent_before = time.monotonic() - self._send_timeout
            now = datetime.now(UTC)
            for connection in self._everyone():
                if connection.sending_since(sent_before):
                    self._spawn(connection.close(CLOSE_TRY_AGAIN, "too slow to receive"))
                elif connection.expired(now):
                    self._spawn(connection.shutdown(CLOSE_UNAUTHORIZED, "token expired"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def discard(self, connection: ChatConnection) -> None:
        self._connections.discard(connection)

    async def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Refuse new sockets, let each open one finish its current frame, then close it."""
        self.closing = True
        everyone = self._everyone()
        if everyone:
            logger.info("Closing %d sockets (code %d)", len(everyone), code)
        async with anyio.create_task_group() as tasks:
            for connection in everyone:
                tasks.start_soon(connection.shutdown, code, reason)

    def session_revoked(self, session_id: str) -> None:
        """Close this process's sockets of a revoked session; they let their current frame finish."""
        for connection in self._everyone():
            if connection.session_id == session_id:
                self._spawn(connection.shutdown(CLOSE_UNAUTHORIZED, "session ended; log in again"))
