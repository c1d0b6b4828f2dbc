"""Turns at sending: sockets with a backlog share the event loop fairly, and leave it room for the rest.

A send into a socket with room does not suspend, so a socket with a backlog of events (its share of a
burst into a big group: hundreds of frames for each of a thousand sockets) would send all of it in one
go, and a commit and its acks would wait for every socket's whole backlog. Instead, once a socket has
sent ``FRAMES_PER_TURN`` frames in a row, or the turns of this pass of the loop have taken
``PASS_SECONDS``, it queues for its next turn. Turns go to one socket at a time, in the order they
queued; after ``PASS_SECONDS`` of them the loop polls for I/O (a database reply, a client frame) before
the next. Acks are not sent in turns, so an ack overtakes the backlog of its socket.

A socket's loop uses it like this::

    sent_in_a_row = 0
    ...send an event...
    if events are waiting:
        sent_in_a_row += 1
        if sent_in_a_row >= FRAMES_PER_TURN or turns.pass_over():
            sent_in_a_row = 0
            await turn.next()       # suspends until this socket's next turn
    else:
        sent_in_a_row = 0
        turn.end()                  # a socket out of events gives its turn to the next
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ("FRAMES_PER_TURN", "PASS_SECONDS", "Turn", "Turns")

# Frames a socket with a backlog sends in one turn; a turn's frames go to the kernel as one write.
FRAMES_PER_TURN = 16
# Seconds of turns between two polls of the event loop for I/O.
PASS_SECONDS = 0.002


class Turns:
    """The queue of sockets waiting for a turn; one per process."""

    __slots__ = ("_held", "_pass_seconds", "_pass_started", "_pump_scheduled", "_waiting")

    def __init__(self, pass_seconds: float = PASS_SECONDS) -> None:
        self._pass_seconds = pass_seconds
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._held = False  # a socket is in its turn
        self._pass_started = 0.0
        self._pump_scheduled = False

    def pass_over(self) -> bool:
        """Whether the turns of this pass of the loop have taken their time."""
        return time.perf_counter() - self._pass_started > self._pass_seconds

    def turn(self) -> Turn:
        """A socket's place in the turns."""
        return Turn(self)

    def _release(self) -> None:
        self._held = False
        self._give()

    def _give(self, new_pass: bool = False) -> None:
        """Hand the turn to the next socket waiting, or end the pass first if its time is up."""
        if self._held or (self._pump_scheduled and not new_pass):
            return
        while self._waiting and self._waiting[0].done():  # its socket closed while it waited
            self._waiting.popleft()
        if not self._waiting:
            return
        if not new_pass and self.pass_over():
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._new_pass)
            return
        self._held = True
        self._waiting.popleft().set_result(None)

    def _new_pass(self) -> None:
        """The loop has polled for I/O since the last turn: a new pass starts, with a turn at least."""
        self._pump_scheduled = False
        self._pass_started = time.perf_counter()
        self._give(new_pass=True)


class Turn:
    """One socket's turns: whether it holds one now, and waiting for the next."""

    __slots__ = ("_holding", "_turns")

    def __init__(self, turns: Turns) -> None:
        self._turns = turns
        self._holding = False

    async def next(self) -> None:
        """End this turn (if the socket is in one) and wait for the next."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        holding, self._holding = self._holding, False
        self._turns._waiting.append(future)
        if holding:
            self._turns._release()
        else:
            self._turns._give()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # given the turn as it was cancelled
                self._turns._release()
            raise
        self._holding = True

    def end(self) -> None:
        """Give up the turn the socket is in, if any: it has nothing more to send."""
        if self._holding:
            self._holding = False
            self._turns._release()
