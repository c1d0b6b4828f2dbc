"""Where a socket's live events and the events polled from the database meet, with none missed or doubled.

While the delivery backend is down, the poller (``windi_chat.poller``) reads each chat's new changes
from the database and queues them on the sockets, marked as polled; live messages and changes that
still arrive are dropped, since the poller will deliver them. When the backend is back, the socket holds
live messages and changes instead of dropping them, the poller queues one last batch read after the
backend was proven to deliver, then a seam marker; at the marker the socket sends what it held that the
last batch did not have, and from then on drops live copies of what it already sent.

A socket follows two counters of its chat, each with a :class:`Track`: seqs (new messages, without
gaps) and revs (every change, a new message included). A socket that caught up by ``after_rev``
compares every message and change by rev; any other compares new messages by seq, as it always has,
and changes by rev. A chat's changes commit in rev order and are polled in rev order, so the highest
number a socket sent is all it needs to tell a copy from something new.
"""

from __future__ import annotations

import enum

from windi_chat.events import KIND_MESSAGE, KIND_UPDATED, message_position, split_event

__all__ = ("POLLED", "Mode", "SocketFeed", "Track", "polled", "seam_end")

POLLED = ord("P")  # the first byte of an event read from the database rather than the backend


class Mode(enum.Enum):
    LIVE = "live"  # the backend delivers
    POLLING = "polling"  # the poller delivers; live copies are dropped
    RESUMING = "resuming"  # the poller's last batch is on its way; live changes are held until the seam


def polled(event: bytes) -> bytes:
    """An event read by the poller, as it is queued on a socket."""
    return b"P" + event


def seam_end(generation: int) -> bytes:
    """The marker after the poller's last batch: live events take over from here."""
    return b"P%d" % generation


class Track:
    """How far a socket has got along one of its chat's counters (seq or rev)."""

    __slots__ = ("delivered", "floor", "queued")

    def __init__(self, seen: int) -> None:
        self.floor = 0  # live copies at or below this are dropped
        self.delivered = seen  # the highest the client has (or, at the handshake, did not ask for)
        self.queued = seen  # the highest the poller has queued on the socket

    @property
    def cursor(self) -> int:
        """The number after which the poller has something new for this socket."""
        return max(self.delivered, self.queued)

    def caught_up(self, number: int) -> None:
        """A replay sent everything up to ``number``: live copies of those are dropped."""
        self.floor = number
        self.delivered = max(self.delivered, number)

    def fresh(self, number: int) -> bool:
        """Whether an event is new to the client (then it counts as sent) or a copy to drop."""
        if number <= self.floor:
            return False
        if number > self.delivered:
            self.delivered = number
        return True


class SocketFeed:
    """What one socket has sent of its chat's messages and changes, and where its events come from."""

    __slots__ = ("_generation", "_held", "by_rev", "mode", "revs", "seqs")

    def __init__(self, seen_seq: int, seen_rev: int = 0, *, by_rev: bool = False) -> None:
        self.mode = Mode.LIVE
        self.seqs = Track(seen_seq)
        self.revs = Track(seen_rev)
        self.by_rev = by_rev  # the socket caught up by ``after_rev``: messages are told apart by rev
        self._held: list[bytes] = []
        self._generation = -1

    def caught_up_by_rev(self, rev: int, seq: int) -> None:
        """A replay by rev sent every change up to ``rev``, new messages up to ``seq`` among them."""
        self.revs.caught_up(rev)
        self.seqs.delivered = max(self.seqs.delivered, seq)

    def fresh(self, kind: int, argument: bytes) -> bool:
        """Whether an event is new to the client (then it counts as sent) or a copy to drop."""
        if kind == KIND_MESSAGE:
            seq, rev = message_position(argument)
            if self.by_rev:
                if not self.revs.fresh(rev):
                    return False
                self.seqs.delivered = max(self.seqs.delivered, seq)
                return True
            if not self.seqs.fresh(seq):
                return False
            self.revs.delivered = max(self.revs.delivered, rev)
            return True
        if kind == KIND_UPDATED:
            return self.revs.fresh(int(argument))
        return True

    def unsent(self, kind: int, argument: bytes) -> bool:
        """Whether a message or change is past what the client has (other events always are)."""
        if kind == KIND_MESSAGE:
            seq, rev = message_position(argument)
            return rev > self.revs.delivered if self.by_rev else seq > self.seqs.delivered
        if kind == KIND_UPDATED:
            return int(argument) > self.revs.delivered
        return True

    def poll(self) -> None:
        """The backend is down: the poller delivers from now on, starting after what the client has."""
        if self.mode is not Mode.POLLING:
            self.mode = Mode.POLLING
            self.seqs.queued, self.revs.queued = self.seqs.delivered, self.revs.delivered
            self._held.clear()

    def resume(self, generation: int) -> None:
        """The backend delivers again: hold live messages and changes until the marker of ``generation``."""
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
                return [event] if self.unsent(kind, argument) else []
            if self.mode is Mode.RESUMING and int(event) == self._generation:
                return self._end_seam()
            return []
        if payload[0] != KIND_MESSAGE and payload[0] != KIND_UPDATED:
            # Reads, membership and typing that still get through go out; a repeat of a read or a
            # membership change tells the client nothing new, and one lost is found by the poller.
            return [payload]
        if self.mode is Mode.RESUMING:
            self._held.append(payload)
        elif self.mode is Mode.LIVE:
            return [payload]
        return []

    def _end_seam(self) -> list[bytes]:
        self.mode = Mode.LIVE
        self.seqs.floor, self.revs.floor = self.seqs.delivered, self.revs.delivered
        held, self._held = self._held, []
        return [event for event in held if self.unsent(*split_event(event)[:2])]
