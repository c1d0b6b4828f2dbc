"""A member reconnecting in a loop while they are removed: the race the handshake must not lose.

Many reconnect loops keep handshakes in flight while the removal commits. Every socket that opened
from the moment the removal started is kept; afterwards each chat socket must be closed with 4403, and
no socket, chat socket or gateway, may receive a message of the chat posted after the removal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api import Account, Api

__all__ = ("CLOSED_AS_REMOVED", "gateway_reconnect_during_removal", "reconnect_during_removal")

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


async def _gateway_fate(socket: ClientConnection, chat_id: int, marker_chat_id: int) -> str:
    """How a kept gateway fares: the marker (posted last, in another chat) alone, or the group's message.

    A gateway whose opening reads its chats after the marker's commit announces the private chat with
    ``chat_added``, the marker as its last message, and drops the live copy: that hears the marker too.
    """
    try:
        async with asyncio.timeout(TIMEOUT):
            async for raw in socket:
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    message = frame["message"]
                elif frame.get("type") == "chat_added" and frame["chat"]["last_message"] is not None:
                    message = frame["chat"]["last_message"]
                else:
                    continue
                if message["chat_id"] == chat_id:  # the group holds nothing from before the removal
                    return "received a message posted after the removal"
                if message["chat_id"] == marker_chat_id:
                    return "heard the marker only"
    except TimeoutError:
        return "still open without the marker"
    except ConnectionClosed:
        pass
    return f"closed with {socket.close_code}"


async def _race(
    url: str,
    loops: int,
    remove: Callable[[], Any],
    post: Callable[[], Any],
    fate: Callable[[ClientConnection], Any] = _fate,
    first_frame: str | None = None,
) -> list[str]:
    removing, removed, warm = asyncio.Event(), asyncio.Event(), asyncio.Event()
    warmed_up: list[None] = []
    kept: list[ClientConnection] = []

    async def reconnect() -> None:
        while not removed.is_set():
            socket = await connect(url, open_timeout=TIMEOUT, compression=None)
            if first_frame is not None:
                await socket.send(first_frame)
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
        return list(await asyncio.gather(*(fate(socket) for socket in kept)))
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


def _post_then_mark(api: Api, owner: Account, chat_id: int, marker_chat_id: int, round_: int) -> None:
    api.send(owner, chat_id, "after the removal", f"after-{round_}")
    api.send(owner, marker_chat_id, "marker", f"marker-{round_}")


def gateway_reconnect_during_removal(api: Api, ws_url: str, rounds: int = 3, loops: int = 25) -> list[str]:
    """The same race for gateways (``/ws``), which stay open: after each removal the owner posts in the
    group, then a marker in a private chat with the member. Returns the fate of every gateway that
    opened once a removal had started: each must hear the marker and nothing of the group after it.
    """
    fates: list[str] = []
    for round_ in range(rounds):
        owner, member = api.people("Owner", "Member")
        chat_id = api.group(owner, "Team", [member])["id"]
        marker_chat_id = api.private_chat(owner, member)["id"]
        remove = partial(api.remove_member, owner, chat_id, member, expect=200)

        post = partial(_post_then_mark, api, owner, chat_id, marker_chat_id, round_)
        url = f"{ws_url}/ws?token={member.token}"
        fate = partial(_gateway_fate, chat_id=chat_id, marker_chat_id=marker_chat_id)
        sync = json.dumps({"type": "sync", "chats": {}})
        fates += asyncio.run(_race(url, loops, remove, post, fate, sync))
    return fates
