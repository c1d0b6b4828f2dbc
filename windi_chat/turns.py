"""Turns at sending: sockets with a backlog share the event loop fairly, and leave it room for the rest.

A send into a socket with room does not suspend, so a socket with a backlog of events (its share of a
burst into a big group: hundreds of frames for each of a thousand sockets) would send all of it in one
go, and a commit and its acks would wait for every socket's whole backlog. Instead, once a socket has
sent ``FRAMES_PER_TURN`` frames in a row, or the turns of this pass of the loop have taken
``PASS_SECONDS``, it queues for its next turn. Turns go to one socket at a time, in the order they
queued; after ``PASS_SECONDS`` of them the loop polls for I/O (a database reply, a client frame) before
the next. Acks are not sent in turns, so an ack overtakes the backlog of its socket.

Outside a pass (none has started since the loop last polled), the pass counts as over: a socket with a
second event waiting sends one and queues. So every socket's first event, usually a new message, leaves
before anyone's second, usually the read marker that message moved. Merging the two into one write
saves system calls but delays the messages behind the markers; measured, it raised their latency
(bench/README.md, "Measured and left out").

A socket's loop calls ``await turn.sent(events_waiting)`` after each event it sends, and
``turn.end()`` when it closes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ("FRAMES_PER_TURN", "HOLD_SECONDS", "PASS_SECONDS", "Turn", "Turns")

# Frames a socket with a backlog sends in one turn; a turn's frames go to the kernel as one write.
FRAMES_PER_TURN = 16
# Seconds of turns between two polls of the event loop for I/O.
PASS_SECONDS = 0.002
# Seconds a socket may hold its turn (a turn's 16 frames take well under one). One whose client stopped
# reading blocks in its send; the turn then goes on without it, so a stuck client holds up the others'
# backlogs for this long once, and not again until its send returns.
HOLD_SECONDS = 0.01


class Turns:
    """The queue of sockets waiting for a turn; one per process."""

    __slots__ = (
        "_hold_seconds",
        "_hold_timer",
        "_holder",
        "_pass_seconds",
        "_pass_started",
        "_pump_scheduled",
        "_turns_given",
        "_waiting",
    )

    def __init__(self, pass_seconds: float = PASS_SECONDS, hold_seconds: float = HOLD_SECONDS) -> None:
        self._pass_seconds = pass_seconds
        self._hold_seconds = hold_seconds
        self._waiting: deque[asyncio.Future[int]] = deque()
        self._turns_given = 0  # numbers the turns, so a turn taken back cannot be given up twice
        self._holder = 0  # the number of the turn a socket is in, 0 when none is
        self._hold_timer: asyncio.TimerHandle | None = None
        self._pass_started = 0.0
        self._pump_scheduled = False

    def pass_over(self) -> bool:
        """Whether the turns of this pass of the loop have taken their time."""
        return time.perf_counter() - self._pass_started > self._pass_seconds

    def turn(self) -> Turn:
        """A socket's place in the turns."""
        return Turn(self)

    def _release(self, number: int) -> None:
        """Turn ``number`` is over (unless it was taken back already): the next socket's starts."""
        if number != self._holder:
            return
        self._holder = 0
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._give()

    def _give(self, new_pass: bool = False) -> None:
        """Hand the turn to the next socket waiting, or end the pass first if its time is up."""
        if self._holder or (self._pump_scheduled and not new_pass):
            return
        while self._waiting and self._waiting[0].done():  # its socket closed while it waited
            self._waiting.popleft()
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        if not new_pass and self.pass_over():
            self._pump_scheduled = True
            loop.call_soon(self._new_pass)
            return
        self._turns_given += 1
        self._holder = self._turns_given
        self._hold_timer = loop.call_later(self._hold_seconds, self._release, self._holder)
        self._waiting.popleft().set_result(self._holder)

    def _new_pass(self) -> None:
        """The loop has polled for I/O since the last turn: a new pass starts, with a turn at least."""
        self._pump_scheduled = False
        self._pass_started = time.perf_counter()
        self._give(new_pass=True)


class Turn:
    """One socket's turns: the one it is in, if any, and waiting for the next."""

    __slots__ = ("_number", "_sent_in_a_row", "_turns")

    def __init__(self, turns: Turns) -> None:
        self._turns = turns
        self._number = 0  # of the turn the socket is in
        self._sent_in_a_row = 0  # events sent since the socket last waited for a turn

    async def sent(self, waiting: int) -> None:
        """After an event: with ``waiting`` more, wait for the next turn once this one is used up;
        with none, give the turn up."""
        if not waiting:
            self._sent_in_a_row = 0
            self.end()
            return
        self._sent_in_a_row += 1
        if self._sent_in_a_row >= FRAMES_PER_TURN or self._turns.pass_over():
            self._sent_in_a_row = 0
            await self.next()

    async def next(self) -> None:
        """End this turn (if the socket is in one) and wait for the next."""
        turns = self._turns
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        turns._waiting.append(future)
        self.end()
        turns._give()
        try:
            self._number = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # given the turn as it was cancelled
                turns._release(future.result())
            raise

    def end(self) -> None:
        """Give up the turn the socket is in, if any: it has nothing more to send."""
        if self._number:
            number, self._number = self._number, 0
            self._turns._release(number)
