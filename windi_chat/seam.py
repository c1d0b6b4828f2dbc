"""Where a socket's live events and the events polled from the database meet, with none missed or doubled.

While the delivery backend is down, the poller (``windi_chat.poller``) reads each chat's new events
from the database and queues them on the sockets, marked as polled; live messages that still arrive
are dropped, since the poller will deliver them. When the backend is back, the socket holds live
messages instead of dropping them, the poller queues one last batch read after the backend was proven
to deliver, then a seam marker; at the marker the socket sends what it held that the last batch did
not have, and from then on drops live copies of messages at or below the last seq it sent.

Seqs have no gaps and a chat's events are polled in seq order, so the highest seq a socket sent is
all it needs to tell a copy from a new message.
"""

from __future__ import annotations

import enum

from windi_chat.events import KIND_MESSAGE, split_event

__all__ = ("POLLED", "Mode", "SocketFeed", "polled", "seam_end")

POLLED = ord("P")  # the first byte of an event read from the database rather than the backend


class Mode(enum.Enum):
    LIVE = "live"  # the backend delivers
    POLLING = "polling"  # the poller delivers; live copies are dropped
    RESUMING = "resuming"  # the poller's last batch is on its way; live messages are held until the seam


def polled(event: bytes) -> bytes:
    """An event read by the poller, as it is queued on a socket."""
    return b"P" + event


def seam_end(generation: int) -> bytes:
    """The marker after the poller's last batch: live events take over from here."""
    return b"P%d" % generation


class SocketFeed:
    """What one socket has sent of its chat's messages, and where its events come from."""

    __slots__ = ("_generation", "_held", "delivered", "floor", "mode", "queued")

    def __init__(self, seen_seq: int) -> None:
        self.mode = Mode.LIVE
        self.floor = 0  # live copies of messages at or below this seq are dropped
        self.delivered = seen_seq  # the highest seq the client has (or, at the handshake, did not ask for)
        self.queued = seen_seq  # the highest seq the poller has queued on the socket
        self._held: list[bytes] = []
        self._generation = -1

    @property
    def cursor(self) -> int:
        """The seq after which the poller has something new for this socket."""
        return max(self.delivered, self.queued)

    def caught_up(self, seq: int) -> None:
        """The catch-up sent everything up to ``seq``: live copies of those are dropped."""
        self.floor = seq
        self.delivered = max(self.delivered, seq)

    def fresh(self, seq: int) -> bool:
        """Whether a message is new to the client (then it counts as sent) or a copy to drop."""
        if seq <= self.floor:
            return False
        if seq > self.delivered:
            self.delivered = seq
        return True

    def poll(self) -> None:
        """The backend is down: the poller delivers from now on, starting after what the client has."""
        if self.mode is not Mode.POLLING:
            self.mode, self.queued = Mode.POLLING, self.delivered
            self._held.clear()

    def resume(self, generation: int) -> None:
        """The backend delivers again: hold live messages until the seam marker of ``generation``."""
        self.mode = Mode.RESUMING
        self._generation = generation
        self._held.clear()

    def admit(self, payload: bytes) -> list[bytes]:
        """The events to forward for ``payload`` while not live, or when it was polled."""
        if payload[0] == POLLED:
            if self.mode is Mode.LIVE:
                return []  # left over from before the seam: live delivery has all of it
            event = payload[1:]
            if not event[:1].isdigit():
                kind, argument, _ = split_event(event)
                return [] if kind == KIND_MESSAGE and int(argument) <= self.delivered else [event]
            if self.mode is Mode.RESUMING and int(event) == self._generation:
                return self._end_seam()
            return []
        if payload[0] != KIND_MESSAGE:
            # Reads, membership and typing that still get through go out; a repeat of a read or a
            # membership change tells the client nothing new, and one lost is found by the poller.
            return [payload]
        if self.mode is Mode.RESUMING:
            self._held.append(payload)
        elif self.mode is Mode.LIVE:
            return [payload]
        return []

    def _end_seam(self) -> list[bytes]:
        self.mode, self.floor = Mode.LIVE, self.delivered
        held, self._held = self._held, []
        return [message for message in held if int(split_event(message)[1]) > self.floor]
