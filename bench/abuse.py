"""The ``abuse`` scenario: one person floods within the limits, another person's latency must hold.

The flooder holds every socket the per-person cap allows on a group they share with the victim, sends
``typing`` on each at the frame limit, sends messages at the per-person rate (half over REST, half over
a socket) and logs in back to back. The victim sends over REST and over a socket to a private chat, one
send at a time, paced; their p99 under the flood is compared with their p99 before it, on the same
server. The server runs with the default per-person limits, which the flood is bound by.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.load import PASSWORD, TEXT, Api, Member, percentiles
from bench.procs import running_server
from bench.scenarios import Context, Result

__all__ = ("abuse",)

# The per-person limits the server runs with here: its defaults, named so the flood can keep to them.
LIMITS = {
    "WINDI_SEND_RATE": "20",
    "WINDI_SEND_BURST": "50",
    "WINDI_WS_FRAMES_PER_SECOND": "20",
    "WINDI_WS_MAX_SOCKETS_PER_USER": "32",
    "WINDI_TYPING_INTERVAL": "2",
    "WINDI_AUTH_RATE_LIMIT": "30",
}
VICTIM_INTERVAL = 0.05  # seconds between two of the victim's sends
TARGET_RATIO = 2.0

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def _socket_url(ws_url: str, chat_id: int, token: str) -> str:
    return f"{ws_url}/ws/{chat_id}?token={token}"


async def _drain(socket: ClientConnection, frames: Counter[str]) -> None:
    """Read and count every frame, so the server never sees a slow reader."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in socket:
            frame = _decode(raw)
            frames[str(frame.get("code") or frame.get("type"))] += 1


class Victim:
    """Sends one message at a time, over REST and over a socket, and keeps each one's latency."""

    def __init__(self, base_url: str, ws_url: str, member: Member, chat_id: int) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=60)
        self._url = _socket_url(ws_url, chat_id, member.token)
        self._headers = {"Authorization": f"Bearer {member.token}"}
        self._chat_id = chat_id
        self._ids = itertools.count()
        self._socket: ClientConnection | None = None
        self.failures: list[str] = []

    async def open(self) -> None:
        self._socket = await connect(self._url, compression=None, open_timeout=60)

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        await self._http.aclose()

    async def measure(self, samples: int) -> tuple[list[float], list[float]]:
        """``samples`` REST sends and as many socket sends, alternating: their latencies in seconds."""
        rest: list[float] = []
        socket: list[float] = []
        for _ in range(samples):
            rest.append(await self._timed(self._send_rest))
            await asyncio.sleep(VICTIM_INTERVAL)
            socket.append(await self._timed(self._send_socket))
            await asyncio.sleep(VICTIM_INTERVAL)
        return rest, socket

    @staticmethod
    async def _timed(send: Callable[[], Awaitable[None]]) -> float:
        started = time.perf_counter()
        await send()
        return time.perf_counter() - started

    async def _send_rest(self) -> None:
        body = {"text": TEXT, "client_id": f"victim-rest-{next(self._ids)}"}
        response = await self._http.post(f"/chats/{self._chat_id}/messages", json=body, headers=self._headers)
        if response.status_code != 201:
            self.failures.append(f"victim REST send answered {response.status_code}: {response.text[:200]}")

    async def _send_socket(self) -> None:
        assert self._socket is not None
        client_id = f"victim-ws-{next(self._ids)}"
        await self._socket.send(msgspec.json.encode({"type": "send", "client_id": client_id, "text": TEXT}))
        async for raw in self._socket:
            frame = _decode(raw)
            if frame.get("client_id") != client_id:
                continue  # the victim's own message frame, or events of the chat
            if frame["type"] != "ack":
                self.failures.append(f"victim socket send answered {frame}")
            return


class Flood:
    """The flooder's typing, sends and logins, each kept to its limit, until stopped."""

    def __init__(self, base_url: str, ws_url: str, member: Member, chat_id: int, sockets: int) -> None:
        self._base_url, self._ws_url = base_url, ws_url
        self._member, self._chat_id, self._sockets = member, chat_id, sockets
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._open: list[ClientConnection] = []
        self.frames: Counter[str] = Counter()  # what the flooder's sockets were told
        self.statuses: Counter[str] = Counter()  # REST sends and logins, by status

    async def start(self) -> None:
        url = _socket_url(self._ws_url, self._chat_id, self._member.token)
        self._open = list(
            await asyncio.gather(
                *(connect(url, compression=None, open_timeout=60) for _ in range(self._sockets))
            )
        )
        for socket in self._open:
            self._tasks.append(asyncio.create_task(_drain(socket, self.frames)))
        typing, sending = self._open[:-1], self._open[-1]
        for socket in typing:
            self._tasks.append(asyncio.create_task(self._type(socket)))
        self._tasks.append(asyncio.create_task(self._send_over_socket(sending)))
        self._tasks.append(asyncio.create_task(self._send_over_rest()))
        self._tasks += [asyncio.create_task(self._log_in()) for _ in range(2)]

    async def stop(self) -> None:
        self._stop.set()
        for socket in self._open:
            await socket.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _paced(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            with contextlib.suppress(ConnectionClosed, httpx.HTTPError):
                await action()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def _type(self, socket: ClientConnection) -> None:
        frame = msgspec.json.encode({"type": "typing"})
        await self._paced(1 / 19, lambda: socket.send(frame))  # just under the frame limit of 20/s

    async def _send_over_socket(self, socket: ClientConnection) -> None:
        ids = itertools.count()

        async def send() -> None:
            body = {"type": "send", "client_id": f"flood-ws-{next(ids)}", "text": TEXT}
            await socket.send(msgspec.json.encode(body))

        await self._paced(1 / 10, send)  # half of the per-person rate of 20/s

    async def _send_over_rest(self) -> None:
        ids = itertools.count()
        headers = {"Authorization": f"Bearer {self._member.token}"}
        async with httpx.AsyncClient(base_url=self._base_url, timeout=60) as http:

            async def send() -> None:
                body = {"text": TEXT, "client_id": f"flood-rest-{next(ids)}"}
                response = await http.post(f"/chats/{self._chat_id}/messages", json=body, headers=headers)
                self.statuses[f"send {response.status_code}"] += 1

            await self._paced(1 / 10, send)

    async def _log_in(self) -> None:
        form = {"username": self._member.email, "password": PASSWORD}
        async with httpx.AsyncClient(base_url=self._base_url, timeout=60) as http:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.post("/login", data=form)
                    self.statuses[f"login {response.status_code}"] += 1


async def abuse(ctx: Context) -> Result:
    """The victim's p99 before and during the flood; the ratio is the figure that matters."""
    p = ctx.params
    result = Result("abuse", {"samples": p.abuse_samples, "flood_sockets": p.abuse_sockets, **LIMITS})
    async with running_server("chat", "abuse", LIMITS) as server:
        api = Api(server.base_url)
        flooder, victim_member, friend = await api.register_users(3, "abuse")
        group_id = await api.create_group(flooder, [victim_member, friend], "abuse")
        private_id = await api.open_private(victim_member, friend)
        await api.close()
        # The victim also listens on the group, so the flood's events reach one of their sockets.
        listening = await connect(_socket_url(server.ws_url, group_id, victim_member.token), compression=None)
        heard: Counter[str] = Counter()
        listener = asyncio.create_task(_drain(listening, heard))
        victim = Victim(server.base_url, server.ws_url, victim_member, private_id)
        await victim.open()
        await victim.measure(5)  # warm up
        quiet_rest, quiet_socket = await victim.measure(p.abuse_samples)
        flood = Flood(server.base_url, server.ws_url, flooder, group_id, p.abuse_sockets)
        await flood.start()
        try:
            busy_rest, busy_socket = await victim.measure(p.abuse_samples)
        finally:
            await flood.stop()
        await victim.close()
        await listening.close()
        await listener
        result.correctness(victim.failures, server)
    for name, quiet, busy in (("rest", quiet_rest, busy_rest), ("socket", quiet_socket, busy_socket)):
        before, after = percentiles(quiet)["p99"] * 1000, percentiles(busy)["p99"] * 1000
        ratio = round(after / before, 2) if before else None
        result.figures[f"victim_{name}_p99_quiet_ms"] = round(before, 1)
        result.figures[f"victim_{name}_p99_flood_ms"] = round(after, 1)
        result.figures[f"victim_{name}_p99_ratio"] = ratio
        result.target(
            f"victim {name} p99 under flood <= {TARGET_RATIO}x",
            ratio,
            ratio is not None and ratio <= TARGET_RATIO,
        )
    result.figures["flood_frames_answered"] = dict(flood.frames)
    result.figures["flood_requests_answered"] = dict(flood.statuses)
    result.figures["typing_events_heard_by_victim"] = heard["typing"]
    return result
