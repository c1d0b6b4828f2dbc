"""The load driver's client side: accounts and chats over REST, then sockets that send and keep score.

Every socket remembers each message frame it received by seq, so after a run the driver can prove
that nothing was lost, duplicated or reordered, both against the acks and against the database.
"""

from __future__ import annotations

import asyncio
import gc
import random
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import httpx
import msgspec

from bench.wire import WireSocket, open_wire

__all__ = (
    "Api",
    "ChatSocket",
    "Ledger",
    "Member",
    "Phase",
    "connect_all",
    "paced",
    "percentiles",
    "run_phase",
    "verify",
)

PASSWORD = "bench-password-1"  # noqa: S105 - every bench account's password
TEXT = "The quick brown fox jumps over the lazy dog; a chat message of typical length. "
COMPLETION_TIMEOUT = 120.0


@dataclass
class Member:
    user_id: int
    email: str
    token: str = ""


def percentiles(samples: Sequence[float], points: Iterable[int] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles and the maximum, in the samples' unit; empty samples give zeros."""
    ordered = sorted(samples)
    if not ordered:
        return {**{f"p{p}": 0.0 for p in points}, "max": 0.0}
    result = {
        f"p{p}": ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))] for p in points
    }
    result["max"] = ordered[-1]
    return result


class Api:
    """REST calls of the setup (and of the login burst), on one keep-alive client."""

    def __init__(self, base_url: str, concurrency: int = 8) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url, timeout=120, limits=httpx.Limits(max_connections=concurrency * 2)
        )
        self._gate = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, path: str, token: str = "", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self._gate:
            response = await self.client.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 300:
            msg = f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            raise RuntimeError(msg)
        return response

    async def login(self, email: str) -> str:
        response = await self._call("POST", "/login", data={"username": email, "password": PASSWORD})
        return str(response.json()["access_token"])

    async def _register(self, prefix: str, index: int) -> Member:
        email = f"{prefix}{index}@bench.example"
        body = {"name": f"{prefix} {index}", "email": email, "password": PASSWORD}
        user = (await self._call("POST", "/register", json=body)).json()
        return Member(user_id=int(user["id"]), email=email, token=await self.login(email))

    async def register_users(self, count: int, prefix: str) -> list[Member]:
        """Register and log in ``count`` people (argon2 twice each, as a real sign-up and login)."""
        return list(await asyncio.gather(*(self._register(prefix, i) for i in range(count))))

    async def open_private(self, member: Member, other: Member) -> int:
        body = {"type": "private", "user_id": other.user_id}
        return int((await self._call("POST", "/chats", member.token, json=body)).json()["id"])

    async def create_group(self, owner: Member, members: Sequence[Member], name: str) -> int:
        body = {"type": "group", "name": name, "member_ids": [m.user_id for m in members]}
        return int((await self._call("POST", "/chats", owner.token, json=body)).json()["id"])


class _WireMessage(msgspec.Struct):
    id: int
    chat_id: int
    seq: int
    sender_id: int
    client_id: str


class _ServerFrame(msgspec.Struct):
    type: str
    client_id: str | None = None
    message: _WireMessage | None = None
    code: str | None = None
    detail: str | None = None


class _SendFrame(msgspec.Struct, tag="send", tag_field="type"):
    client_id: str
    text: str


_decode = msgspec.json.Decoder(_ServerFrame).decode
_encode = msgspec.json.Encoder().encode


@dataclass
class Ledger:
    """What the driver sent and what came back, across all sockets of a scenario."""

    sent_at: dict[str, float] = field(default_factory=dict)
    acked: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # client id -> chat, seq, id
    latencies: list[float] = field(default_factory=list)  # seconds, send to another member's receipt
    ack_latencies: list[float] = field(default_factory=list)  # seconds, send to its ack
    deliveries: int = 0
    errors: list[str] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    ack_order_violations: int = 0
    broken: asyncio.Event = field(default_factory=asyncio.Event)  # a socket was closed by the server

    def start_phase(self) -> None:
        self.latencies = []
        self.ack_latencies = []
        self.deliveries = 0


OPEN_TIMEOUT = 120.0  # seconds for a handshake, thousands of them at once in ``idle``


class ChatSocket:
    """One device's socket on one chat: sends with a window of unacknowledged frames, records receipts."""

    def __init__(self, ws_url: str, chat_id: int, member: Member, ledger: Ledger, device: int = 0) -> None:
        self.url = f"{ws_url}/ws/{chat_id}?token={member.token}"
        self.chat_id = chat_id
        self.member = member
        self.user_id = member.user_id
        self.device = device
        self.ledger = ledger
        self.seen: dict[int, str] = {}  # seq -> client id
        self.duplicates = 0
        self.order_violations = 0
        self.target = 0
        self.done = asyncio.Event()
        self.window = asyncio.Semaphore(1)
        self._last_seq_by_sender: dict[int, int] = {}
        self._last_ack_seq = 0
        self._sent = 0
        self._closing = False
        self.broken = False
        self._ws: WireSocket | None = None

    async def connect(self) -> None:
        async with asyncio.timeout(OPEN_TIMEOUT):
            self._ws = await open_wire(self.url, self._on_frame, self._on_close)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    def expect(self, more: int) -> None:
        self.target += more
        if len(self.seen) < self.target:
            self.done.clear()

    async def send(self, tag: str) -> None:
        """Send one message once the window has room; its client id is unique in the whole run."""
        await asyncio.wait_for(self.window.acquire(), COMPLETION_TIMEOUT)
        if self.broken:
            self.window.release()  # let the next waiting send through, to return at once too
            return
        self._sent += 1
        client_id = f"{tag}-{self.user_id}-{self.device}-{self._sent}"
        self.ledger.sent_at[client_id] = time.perf_counter()
        assert self._ws is not None
        self._ws.send_text(_encode(_SendFrame(client_id=client_id, text=TEXT + client_id)))

    def _on_frame(self, raw: bytes, now: float) -> None:
        ledger = self.ledger
        frame = _decode(raw)
        message = frame.message
        if frame.type == "message" and message is not None:
            self._on_message(message, now)
        elif frame.type == "ack" and message is not None:
            ledger.acked[message.client_id] = (message.chat_id, message.seq, message.id)
            sent_at = ledger.sent_at.get(message.client_id)
            if sent_at is not None:
                ledger.ack_latencies.append(now - sent_at)
            if message.seq <= self._last_ack_seq:
                ledger.ack_order_violations += 1
            self._last_ack_seq = message.seq
            self.window.release()
        elif frame.type == "error":
            ledger.errors.append(f"chat {self.chat_id} user {self.user_id}: {frame.code} {frame.detail}")
            if frame.client_id:
                self.window.release()

    def _on_close(self) -> None:
        if self._closing or self._ws is None:
            return
        if self._ws.failure is not None:
            self.ledger.errors.append(f"chat {self.chat_id} user {self.user_id}: driver {self._ws.failure!r}")
        else:
            code, reason = self._ws.close_code, self._ws.close_reason
            self.ledger.closes.append(f"chat {self.chat_id} user {self.user_id}: code {code} {reason!r}")
        self.broken = True
        self.window.release()
        self.ledger.broken.set()

    def _on_message(self, message: _WireMessage, now: float) -> None:
        if message.seq in self.seen:
            self.duplicates += 1
            return
        self.seen[message.seq] = message.client_id
        self.ledger.deliveries += 1
        last = self._last_seq_by_sender.get(message.sender_id, 0)
        if message.seq < last:
            self.order_violations += 1
        self._last_seq_by_sender[message.sender_id] = max(last, message.seq)
        if message.sender_id != self.user_id:
            sent_at = self.ledger.sent_at.get(message.client_id)
            if sent_at is not None:
                self.ledger.latencies.append(now - sent_at)
        if len(self.seen) >= self.target:
            self.done.set()


async def connect_all(sockets: Sequence[ChatSocket], concurrency: int = 64) -> float:
    """Open every socket, ``concurrency`` handshakes at a time; return the seconds it took."""
    gate = asyncio.Semaphore(concurrency)

    async def one(chat_socket: ChatSocket) -> None:
        async with gate:
            await chat_socket.connect()

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in sockets))
    return time.perf_counter() - started


@dataclass
class Phase:
    """The figures of one measured window."""

    acked: int
    deliveries: int
    seconds: float
    server_cpu_seconds: float
    driver_cpu_seconds: float
    latencies: list[float]
    ack_latencies: list[float] = field(default_factory=list)
    driver_lags: list[float] = field(default_factory=list)
    wal_bytes: int | None = None  # PostgreSQL's write-ahead log written in the window, whole cluster
    writer: dict[str, float] = field(default_factory=dict)  # its batches (``stored.writer_timeline``)

    def figures(self) -> dict[str, float]:
        latency_ms = {key: round(value * 1000, 2) for key, value in percentiles(self.latencies).items()}
        ack_ms = {key: round(value * 1000, 2) for key, value in percentiles(self.ack_latencies).items()}
        lag_ms = {key: round(value * 1000, 2) for key, value in percentiles(self.driver_lags).items()}
        per_ack = None if self.wal_bytes is None else round(self.wal_bytes / max(1, self.acked))
        logged = {} if per_ack is None else {"wal_bytes_per_ack": per_ack}
        return {
            "acked_per_second": round(self.acked / self.seconds, 1),
            "deliveries_per_second": round(self.deliveries / self.seconds, 1),
            "acked": self.acked,
            "deliveries": self.deliveries,
            "seconds": round(self.seconds, 3),
            **{f"latency_{key}_ms": value for key, value in latency_ms.items()},
            **{f"ack_latency_{key}_ms": value for key, value in ack_ms.items()},
            "server_cpu_us_per_ack": round(self.server_cpu_seconds / max(1, self.acked) * 1e6, 1),
            "server_cpu_us_per_delivery": round(self.server_cpu_seconds / max(1, self.deliveries) * 1e6, 1),
            "server_cpu_share_of_one_core": round(self.server_cpu_seconds / self.seconds, 2),
            "driver_cpu_share_of_one_core": round(self.driver_cpu_seconds / self.seconds, 2),
            **{f"driver_lag_{key}_ms": value for key, value in lag_ms.items()},
            **logged,
            **{f"writer_{key}": value for key, value in self.writer.items()},
        }


async def _sample_lag(lags: list[float], period: float = 0.001) -> None:
    """How late the driver's own event loop wakes a timer: a delivery that arrives meanwhile waits as
    long to be stamped, so this part of a latency is the driver's, not the server's."""
    while True:  # the clock, not the loop's: uvloop's counts whole milliseconds
        due = time.perf_counter() + period
        await asyncio.sleep(period)
        lags.append(max(0.0, time.perf_counter() - due))


def _driver_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sender(Protocol):
    async def send(self, tag: str) -> None: ...


async def paced(chat_socket: Sender, count: int, tag: str, rate: float | None) -> None:
    """``count`` sends (or edits) of one socket: as fast as its window allows, or ``rate`` a second."""
    if rate is None:
        for _ in range(count):
            await chat_socket.send(tag)
        return
    interval = 1.0 / rate
    start = time.perf_counter() + random.random() * interval  # noqa: S311 - spreading, not secrecy
    for index in range(count):
        delay = start + index * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await chat_socket.send(tag)


async def run_phase(
    sockets: Sequence[ChatSocket],
    senders: Sequence[ChatSocket],
    per_sender: int,
    window: int,
    tag: str,
    server_cpu: Callable[[], float],
    rate_per_sender: float | None = None,
) -> Phase:
    """Every sender sends ``per_sender`` messages (as fast as the window allows, or paced); the window
    closes when every socket has every message of its chat.
    """
    ledger = sockets[0].ledger
    ledger.start_phase()
    # What the driver set up so far lives on: a full collection would walk all of it in the middle of
    # the window, and the pause would count as the server's latency.
    gc.collect()
    gc.freeze()
    into_chat: defaultdict[int, int] = defaultdict(int)
    for sender in senders:
        into_chat[sender.chat_id] += per_sender
        sender.window = asyncio.Semaphore(window)
    for chat_socket in sockets:
        chat_socket.expect(into_chat[chat_socket.chat_id])
    acked_before = len(ledger.acked)
    lags: list[float] = []
    sampler = asyncio.ensure_future(_sample_lag(lags))
    cpu_before, driver_before, started = server_cpu(), _driver_cpu(), time.perf_counter()
    try:
        await asyncio.gather(*(paced(s, per_sender, tag, rate_per_sender) for s in senders))
        await _settle(sockets, senders, window)
    finally:  # a window that fails leaves no sampler running into the next
        sampler.cancel()
    finished, cpu_after, driver_after = time.perf_counter(), server_cpu(), _driver_cpu()
    return Phase(
        acked=len(ledger.acked) - acked_before,
        deliveries=ledger.deliveries,
        seconds=finished - started,
        server_cpu_seconds=cpu_after - cpu_before,
        driver_cpu_seconds=driver_after - driver_before,
        latencies=ledger.latencies,
        ack_latencies=ledger.ack_latencies,
        driver_lags=lags,
    )


async def _settle(sockets: Sequence[ChatSocket], senders: Sequence[ChatSocket], window: int) -> None:
    """Wait for every socket to have its chat's messages and every send its ack, unless a socket broke
    (the missing messages are then reported by ``verify``) or nothing arrives in time.
    """
    ledger = sockets[0].ledger

    async def all_in() -> None:
        for chat_socket in sockets:
            await chat_socket.done.wait()
        for sender in senders:
            for _ in range(window):
                await sender.window.acquire()

    waiting = asyncio.ensure_future(all_in())
    broken = asyncio.ensure_future(ledger.broken.wait())
    done, _ = await asyncio.wait({waiting, broken}, timeout=COMPLETION_TIMEOUT, return_when="FIRST_COMPLETED")
    waiting.cancel()
    broken.cancel()
    if not done:
        late = sum(1 for s in sockets if not s.done.is_set())
        ledger.errors.append(f"gave up after {COMPLETION_TIMEOUT:g}s: {late} sockets still missing messages")
    elif broken in done:
        await asyncio.sleep(1)  # let in-flight frames land before counting what is missing


async def _stored(dsn: str, chat_ids: list[int]) -> tuple[dict[int, int], list[asyncpg.Record]]:
    connection = await asyncpg.connect(dsn)
    try:
        chats = await connection.fetch("SELECT id, last_seq FROM chats WHERE id = ANY($1)", chat_ids)
        rows = await connection.fetch(
            "SELECT chat_id, sender_id, client_id, seq, id FROM messages WHERE chat_id = ANY($1)", chat_ids
        )
    finally:
        await connection.close()
    return {row["id"]: row["last_seq"] for row in chats}, rows


async def verify(sockets: Sequence[ChatSocket], dsn: str | None) -> list[str]:
    """Every problem found: sends without ack, error frames, closes, rows stored twice or missing, seq
    gaps, and any socket that missed a message, got one twice, or got one sender's out of order.
    With ``dsn=None`` (the echo server) the acks stand in for the database.
    """
    ledger = sockets[0].ledger
    # Copied before the database is read: whatever was acked or delivered by then is committed.
    acked = dict(ledger.acked)
    seen = [dict(s.seen) for s in sockets]
    failures = [f"error frame: {e}" for e in ledger.errors[:5]] + [
        f"socket closed: {c}" for c in ledger.closes[:5]
    ]
    if len(ledger.errors) > 5 or len(ledger.closes) > 5:
        failures.append(f"{len(ledger.errors)} error frames and {len(ledger.closes)} closes in all")
    unacked = len(ledger.sent_at) - len(acked)
    if unacked:
        failures.append(f"{unacked} sends never acknowledged")
    if ledger.ack_order_violations:
        failures.append(
            f"{ledger.ack_order_violations} acks with a seq lower than the same socket's previous ack"
        )
    chat_ids = sorted({s.chat_id for s in sockets})
    if dsn is None:
        by_chat: dict[int, dict[int, str]] = defaultdict(dict)
        for client_id, (chat_id, seq, _id) in acked.items():
            by_chat[chat_id][seq] = client_id
        last_seq = {chat_id: max(by_chat[chat_id], default=0) for chat_id in chat_ids}
    else:
        last_seq, rows = await _stored(dsn, chat_ids)
        by_chat = defaultdict(dict)
        copies: defaultdict[tuple[int, int, str], int] = defaultdict(int)
        for row in rows:
            copies[(row["chat_id"], row["sender_id"], row["client_id"])] += 1
            if row["seq"] in by_chat[row["chat_id"]]:
                failures.append(f"chat {row['chat_id']}: seq {row['seq']} stored twice")
            by_chat[row["chat_id"]][row["seq"]] = row["client_id"]
        stored_twice = sum(1 for count in copies.values() if count > 1)
        if stored_twice:
            failures.append(f"{stored_twice} messages stored more than once")
        stored = {(row["chat_id"], row["client_id"]): (row["seq"], row["id"]) for row in rows}
        wrong = [cid for cid, (chat, seq, mid) in acked.items() if stored.get((chat, cid)) != (seq, mid)]
        if wrong:
            chat, seq, mid = acked[wrong[0]]
            failures.append(
                f"{len(wrong)} acknowledged messages missing or different in the database, e.g. {wrong[0]}: "
                f"acked chat {chat} seq {seq} id {mid}, stored (seq, id) {stored.get((chat, wrong[0]))}"
            )
        if len(rows) != len(acked):
            failures.append(f"{len(rows)} rows stored for {len(acked)} acknowledged messages")
    for chat_id in chat_ids:
        expected = set(range(1, last_seq.get(chat_id, 0) + 1))
        if set(by_chat[chat_id]) != expected:
            failures.append(f"chat {chat_id}: stored seqs are not exactly 1..{last_seq.get(chat_id, 0)}")
    missing = duplicated = reordered = mismatched = 0
    for chat_socket, received in zip(sockets, seen, strict=True):
        truth = by_chat[chat_socket.chat_id]
        missing += len(set(truth) - set(received))
        duplicated += chat_socket.duplicates
        reordered += chat_socket.order_violations
        wrong_seqs = [(seq, cid, truth.get(seq)) for seq, cid in received.items() if truth.get(seq) != cid]
        if wrong_seqs and not mismatched:
            seq, cid, stored_cid = wrong_seqs[0]
            failures.append(
                f"chat {chat_socket.chat_id}: delivered seq {seq} as {cid}, stored as {stored_cid}"
            )
        mismatched += len(wrong_seqs)
    for count, what in (
        (missing, "deliveries lost"),
        (duplicated, "deliveries duplicated"),
        (reordered, "deliveries out of one sender's order"),
        (mismatched, "deliveries that do not match the stored message"),
    ):
        if count:
            failures.append(f"{count} {what}")
    return failures
