"""Turns at sending a backlog, and the corked transport that writes one turn's frames at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from windi_chat.transports import CorkedTransport
from windi_chat.turns import Turns

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _socket(turns: Turns, name: str, slices: int, log: list[str]) -> None:
    """A socket with ``slices`` turns' worth of backlog: it logs each turn it gets, then gives it up."""
    turn = turns.turn()
    for index in range(slices):
        await turn.next()
        log.append(f"{name}{index}")
    turn.end()


async def test_turns_go_to_one_socket_at_a_time_in_the_order_they_queued() -> None:
    turns = Turns(pass_seconds=60.0)  # no pass ends here: only the order is tested
    log: list[str] = []
    sockets = (_socket(turns, "a", 3, log), _socket(turns, "b", 3, log), _socket(turns, "c", 2, log))
    await asyncio.wait_for(asyncio.gather(*sockets), timeout=10)
    assert log == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2"]


async def test_a_pass_that_took_its_time_lets_the_loop_run_before_the_next_turn() -> None:
    turns = Turns(pass_seconds=0.0)  # every turn ends the pass
    log: list[str] = []

    async def other() -> None:  # the rest of the process: a task that runs whenever it can
        for index in range(6):
            log.append(f"x{index}")
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(_socket(turns, "a", 3, log), other()), timeout=10)
    turns_at = [log.index(f"a{index}") for index in range(3)]
    assert all(log[earlier + 1].startswith("x") for earlier in turns_at[:2]), log


async def test_a_socket_closed_while_waiting_or_in_its_turn_does_not_hold_up_the_others() -> None:
    turns = Turns(pass_seconds=60.0)
    log: list[str] = []
    holder, waiter = turns.turn(), turns.turn()
    await holder.next()  # in its turn
    waiting = asyncio.ensure_future(waiter.next())
    await asyncio.sleep(0)
    waiting.cancel()  # closed while it waited
    with pytest.raises(asyncio.CancelledError):
        await waiting
    holder.end()  # closed in its turn: passed on
    await asyncio.wait_for(_socket(turns, "b", 2, log), timeout=10)
    assert log == ["b0", "b1"]


class _Transport:
    """A transport that records what reaches it, in the calls it came in."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return f"info:{name}"


async def test_a_corked_transport_writes_a_turns_frames_as_one_in_order_and_flushes_on_close() -> None:
    real = _Transport()
    corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    for frame in (b"1", b"2", b"3"):
        corked.write(frame)
    assert real.writes == []
    assert corked.get_write_buffer_size() == 3
    await asyncio.sleep(0)
    assert real.writes == [b"123"]
    corked.write(b"4")
    corked.close()
    assert real.writes == [b"123", b"4"]
    assert real.closed
    assert corked.get_extra_info("socket") == "info:socket"


async def test_an_aborted_corked_transport_writes_nothing_more() -> None:
    real = _Transport()
    corked = CorkedTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"lost")
    corked.abort()
    await asyncio.sleep(0)
    assert real.writes == []
    assert real.aborted


async def test_a_socket_stuck_in_its_turn_loses_it_and_cannot_end_the_next_ones() -> None:
    turns = Turns(pass_seconds=60.0, hold_seconds=0.5)
    stuck, second, third = turns.turn(), turns.turn(), turns.turn()
    await stuck.next()  # in its turn, and then blocked in a send to a client that reads nothing
    await asyncio.wait_for(second.next(), timeout=10)  # the turn went on without it
    stuck.end()  # its send returned at last: the turn it gives up is no longer its own
    waiting = asyncio.ensure_future(third.next())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # the second socket is still in its turn
    second.end()
    await asyncio.wait_for(waiting, timeout=10)
    third.end()
