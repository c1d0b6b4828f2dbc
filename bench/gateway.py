"""The ``gateway`` scenario: N people in K group chats each, one gateway (``/ws``) each, a paced load.

People are put in groups of ``gateway_group`` K times over, so each is in K chats. Every person opens
one gateway with a ``sync`` that names all their chats; then messages are sent on the senders' own
gateways at a fixed rate, round-robin over people and their chats. Reported: the server's memory per
gateway (RSS after the gateways opened less before, over their number), its CPU per delivered
message frame, and delivery latency. Every gateway must get every message of its chats exactly once,
in seq order per chat.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.capacity import SETTLE_SECONDS
from bench.load import TEXT, Api, Member, percentiles
from bench.procs import CHEAP_ARGON2, running_server
from bench.scenarios import Context, Result

__all__ = ("gateway",)

MEMORY_TARGET_KIB = 64
COMPLETION_TIMEOUT = 120.0


class _Message(msgspec.Struct):
    chat_id: int
    seq: int
    client_id: str


class _Frame(msgspec.Struct):
    type: str
    message: _Message | None = None
    unread_count: int | None = None
    code: str | None = None
    detail: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.Encoder().encode


@dataclass
class Tally:
    """What every gateway of the run received, against what it should have."""

    sent_at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    deliveries: int = 0
    duplicates: int = 0
    order_violations: int = 0
    missing_unread_counts: int = 0
    errors: list[str] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0


class GatewayClient:
    """One person's device: one gateway, the last seq seen per chat."""

    def __init__(self, ws_url: str, member: Member, chat_ids: list[int], tally: Tally) -> None:
        self.url = f"{ws_url}/ws?token={member.token}"
        self.chat_ids = chat_ids
        self.tally = tally
        self.last_seq: dict[int, int] = defaultdict(int)
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def connect(self) -> None:
        self._ws = await connect(self.url, compression=None, ping_interval=None, open_timeout=120)
        sync = {"type": "sync", "chats": {str(chat_id): 0 for chat_id in self.chat_ids}}
        await self._ws.send(_encode(sync).decode())
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(self, chat_id: int, client_id: str) -> None:
        assert self._ws is not None
        self.tally.sent_at[client_id] = time.perf_counter()
        frame = {"type": "send", "chat_id": chat_id, "client_id": client_id, "text": TEXT + client_id}
        await self._ws.send(_encode(frame).decode())

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self._ws is not None
        tally = self.tally
        try:
            async for raw in self._ws:
                now = time.perf_counter()
                frame = _decode(raw)
                message = frame.message
                if frame.type == "message" and message is not None:
                    self._on_message(message, frame.unread_count, now)
                elif frame.type == "error":
                    tally.errors.append(f"{frame.code}: {frame.detail}")
        except ConnectionClosed:
            pass
        if not self._closing:
            tally.closes.append(f"code {self._ws.close_code} {self._ws.close_reason!r}")

    def _on_message(self, message: _Message, unread_count: int | None, now: float) -> None:
        tally = self.tally
        last = self.last_seq[message.chat_id]
        if message.seq <= last:
            tally.duplicates += message.seq == last
            tally.order_violations += message.seq < last
            return
        self.last_seq[message.chat_id] = message.seq
        tally.deliveries += 1
        tally.missing_unread_counts += unread_count is None
        sent_at = tally.sent_at.get(message.client_id)
        if sent_at is not None:
            tally.latencies.append(now - sent_at)
        if tally.deliveries >= tally.expected:
            tally.all_in.set()


def _groups(people: int, chats: int, size: int) -> list[list[int]]:
    """``chats`` rounds of groups of ``size`` over ``people``: each person is in ``chats`` groups."""
    groups: list[list[int]] = []
    for round_ in range(chats):
        order = sorted(range(people), key=lambda index: (index * (2 * round_ + 1) + round_) % people)
        groups += [order[start : start + size] for start in range(0, people, size)]
    return [group for group in groups if len(group) >= 2]


async def _gather_limited(jobs: list[Coroutine[Any, Any, None]], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await job

    await asyncio.gather(*(one(job) for job in jobs))


async def gateway(ctx: Context) -> Result:
    p = ctx.params
    result = Result(
        "gateway",
        {
            "people": p.gateway_people,
            "chats_per_person": p.gateway_chats,
            "group_size": p.gateway_group,
            "messages": p.gateway_messages,
            "rate_per_second": p.gateway_rate,
        },
    )
    tally = Tally()
    async with running_server("chat", "gateway", CHEAP_ARGON2) as server:
        api = Api(server.base_url, concurrency=16)
        members = await api.register_users(p.gateway_people, "gw")
        groups = _groups(p.gateway_people, p.gateway_chats, p.gateway_group)
        group_ids = await asyncio.gather(
            *(
                api.create_group(members[group[0]], [members[i] for i in group[1:]], f"g{n}")
                for n, group in enumerate(groups)
            )
        )
        await api.close()
        chats_of: dict[int, list[int]] = defaultdict(list)
        for group, chat_id in zip(groups, group_ids, strict=True):
            for index in group:
                chats_of[index].append(chat_id)
        clients = [
            GatewayClient(server.ws_url, member, chats_of[index], tally)
            for index, member in enumerate(members)
        ]
        await asyncio.sleep(SETTLE_SECONDS)
        rss_before = server.rss_kib()
        started = time.perf_counter()
        await _gather_limited([client.connect() for client in clients], 100)
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(SETTLE_SECONDS)
        rss_after = server.rss_kib()

        size_of = {chat_id: len(group) for group, chat_id in zip(groups, group_ids, strict=True)}
        plan = [
            (clients[n % len(clients)], chats_of[n % len(clients)][(n // len(clients)) % p.gateway_chats])
            for n in range(p.gateway_messages)
        ]
        tally.expected = sum(size_of[chat_id] for _, chat_id in plan)
        cpu_before = server.cpu_seconds()
        interval = 1 / p.gateway_rate
        started = time.perf_counter()
        for n, (client, chat_id) in enumerate(plan):
            await asyncio.sleep(max(0.0, started + n * interval - time.perf_counter()))
            await client.send(chat_id, f"gw-{n}")
        try:
            await asyncio.wait_for(tally.all_in.wait(), COMPLETION_TIMEOUT)
        except TimeoutError:
            result.failures.append(f"{tally.expected - tally.deliveries} deliveries missing at the deadline")
        phase_seconds = time.perf_counter() - started
        cpu = server.cpu_seconds() - cpu_before
        await _gather_limited([client.close() for client in clients], 500)
        failures = [f"{name}: {count}" for name, count in _faults(tally).items() if count]
        failures += tally.errors[:5] + tally.closes[:5]
        result.correctness(failures, server)

    per_gateway = (rss_after - rss_before) / len(clients)
    result.figures.update(
        {
            "gateways": len(clients),
            "chats": len(group_ids),
            "connects_per_second": round(len(clients) / connect_seconds, 1),
            "server_rss_before_mib": round(rss_before / 1024, 1),
            "server_rss_after_mib": round(rss_after / 1024, 1),
            "server_kib_per_gateway": round(per_gateway, 1),
            "deliveries": tally.deliveries,
            "phase_seconds": round(phase_seconds, 1),
            "server_cpu_us_per_delivery": round(cpu / max(1, tally.deliveries) * 1e6, 1),
            "delivery_ms": {k: round(v * 1000, 1) for k, v in percentiles(tally.latencies).items()},
        }
    )
    target = f"<= {MEMORY_TARGET_KIB} KiB server memory per gateway"
    result.target(target, round(per_gateway, 1), per_gateway <= MEMORY_TARGET_KIB)
    return result


def _faults(tally: Tally) -> dict[str, int]:
    return {
        "duplicated": tally.duplicates,
        "out of order": tally.order_violations,
        "message frames without unread_count": tally.missing_unread_counts,
    }
