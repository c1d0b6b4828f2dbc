"""A member reconnecting in a loop while they are removed: the race the handshake must not lose.

Many reconnect loops keep handshakes in flight while the removal commits. Every socket that opened
from the moment the removal started is kept; afterwards each must be closed with 4403 and none may
receive a message posted after the removal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api import Api

__all__ = ("CLOSED_AS_REMOVED", "reconnect_during_removal")

TIMEOUT = 10.0
CLOSED_AS_REMOVED = "closed with 4403"


async def _fate(socket: ClientConnection) -> str:
    """How a kept socket ends: closed (with its code), given a message, or still open at the deadline."""
    try:
        async with asyncio.timeout(TIMEOUT):
            async for raw in socket:
                if json.loads(raw).get("type") == "message":
                    return "received a message posted after the removal"
    except TimeoutError:
        return "still open"
    except ConnectionClosed:
        pass
    return f"closed with {socket.close_code}"


async def _race(url: str, loops: int, remove: Callable[[], Any], post: Callable[[], Any]) -> list[str]:
    removing, removed, warm = asyncio.Event(), asyncio.Event(), asyncio.Event()
    warmed_up: list[None] = []
    kept: list[ClientConnection] = []

    async def reconnect() -> None:
        while not removed.is_set():
            socket = await connect(url, open_timeout=TIMEOUT, compression=None)
            if removing.is_set():
                kept.append(socket)  # opened while the removal was under way, or after it
            else:
                await socket.close()
            if len(warmed_up) < loops:
                warmed_up.append(None)
                if len(warmed_up) == loops:
                    warm.set()

    tasks = [asyncio.create_task(reconnect()) for _ in range(loops)]
    try:
        await asyncio.wait_for(warm.wait(), TIMEOUT)
        removing.set()
        await asyncio.to_thread(remove)
        removed.set()
        await asyncio.gather(*tasks)
        await asyncio.to_thread(post)
        return list(await asyncio.gather(*(_fate(socket) for socket in kept)))
    finally:
        removed.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(socket.close() for socket in kept), return_exceptions=True)


def reconnect_during_removal(api: Api, ws_url: str, rounds: int = 3, loops: int = 25) -> list[str]:
    """Remove a member from a fresh group ``rounds`` times while ``loops`` reconnect loops of theirs run.

    REST goes through ``api``, the sockets to ``ws_url`` (another process's, to race across two).
    After each removal the owner posts a message. Returns the fate of every socket that opened once a
    removal had started.
    """
    fates: list[str] = []
    for round_ in range(rounds):
        owner, member = api.people("Owner", "Member")
        chat_id = api.group(owner, "Team", [member])["id"]
        remove = partial(api.remove_member, owner, chat_id, member, expect=200)
        post = partial(api.send, owner, chat_id, "after the removal", f"after-{round_}")
        url = f"{ws_url}/ws/{chat_id}?token={member.token}"
        fates += asyncio.run(_race(url, loops, remove, post))
    return fates
