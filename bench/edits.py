"""The ``edits`` scenario: one group, every member connected, a few of them editing their messages.

Measured as ``group`` measures sends: server CPU per acknowledged edit and per ``message_updated``
delivered, and the latency from an edit frame to another member's copy of the change. Every change
takes the chat's next rev, so the check is exact: every socket must receive every rev of the window
once, and each message's newest copy on every socket must equal the stored row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.load import COMPLETION_TIMEOUT, Api, Member, paced, percentiles
from bench.procs import DB_DSN, running_server
from bench.scenarios import Context, Result

__all__ = ("edits",)

WARM_UP_EDITS = 3


class _Message(msgspec.Struct):
    seq: int
    rev: int
    text: str
    client_id: str


class _Frame(msgspec.Struct):
    type: str
    client_id: str | None = None
    message: _Message | None = None
    code: str | None = None
    detail: str | None = None


_decode = msgspec.json.Decoder(_Frame).decode
_encode = msgspec.json.Encoder().encode


@dataclass
class _Score:
    """What the driver sent and what came back, across the sockets of the scenario."""

    sent_at: dict[str, float] = field(default_factory=dict)  # edit client id -> when it was sent
    rev_of: dict[str, int] = field(default_factory=dict)  # edit client id -> its rev, from the ack
    errors: list[str] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)


class _EditSocket:
    """One member's socket: edits its own message with a window of unacknowledged frames, and records
    every ``message_updated`` it receives, by rev, with the moment it arrived."""

    def __init__(self, ws_url: str, chat_id: int, member: Member, score: _Score) -> None:
        self.url = f"{ws_url}/ws/{chat_id}?token={member.token}"
        self.user_id = member.user_id
        self.score = score
        self.received: dict[int, float] = {}  # rev -> arrival
        self.newest: dict[int, _Message] = {}  # seq -> the copy with the highest rev
        self.duplicates = 0
        self.seq = 0
        self.window = asyncio.Semaphore(1)
        self.acked = asyncio.Event()
        self.wanted = 0  # changes this socket must have received to close the window
        self.caught_up = asyncio.Event()
        self._edits = 0
        self._closing = False
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._ws = await connect(self.url, compression=None, ping_interval=None, open_timeout=120)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    async def post(self) -> None:
        """Send the message this socket will edit, and wait for its ack."""
        assert self._ws is not None
        self.acked.clear()
        frame = {"type": "send", "client_id": f"edits-{self.user_id}", "text": "edit me"}
        await self._ws.send(_encode(frame).decode())
        await asyncio.wait_for(self.acked.wait(), COMPLETION_TIMEOUT)

    async def send(self, tag: str) -> None:
        """Edit this socket's message once the window has room (``load.paced`` drives it)."""
        await asyncio.wait_for(self.window.acquire(), COMPLETION_TIMEOUT)
        self._edits += 1
        client_id = f"{tag}-{self.user_id}-{self._edits}"
        self.score.sent_at[client_id] = time.perf_counter()
        assert self._ws is not None
        frame = {"type": "edit", "seq": self.seq, "text": f"version {client_id}", "client_id": client_id}
        await self._ws.send(_encode(frame).decode())

    def expect(self, more: int) -> None:
        self.wanted = len(self.received) + more
        if len(self.received) < self.wanted:
            self.caught_up.clear()

    async def _read(self) -> None:
        assert self._ws is not None
        score = self.score
        try:
            async for raw in self._ws:
                now = time.perf_counter()
                frame = _decode(raw)
                message = frame.message
                if frame.type == "message_updated" and message is not None:
                    self._on_update(message, now)
                elif frame.type == "ack" and message is not None:
                    if frame.client_id and frame.client_id.startswith("edits-"):
                        self.seq = message.seq
                        self.acked.set()
                    elif frame.client_id:
                        score.rev_of[frame.client_id] = message.rev
                        self.window.release()
                elif frame.type == "error":
                    score.errors.append(f"user {self.user_id}: {frame.code} {frame.detail}")
                    self.window.release()
        except ConnectionClosed:
            pass
        if not self._closing:
            score.closes.append(f"user {self.user_id}: code {self._ws.close_code} {self._ws.close_reason!r}")
            self.caught_up.set()
            self.window.release()

    def _on_update(self, message: _Message, now: float) -> None:
        if message.rev in self.received:
            self.duplicates += 1
            return
        self.received[message.rev] = now
        held = self.newest.get(message.seq)
        if held is None or held.rev < message.rev:
            self.newest[message.seq] = message
        if len(self.received) >= self.wanted:
            self.caught_up.set()


@dataclass
class _Phase:
    edits: int
    deliveries: int
    seconds: float
    server_cpu_seconds: float
    latencies: list[float]

    def figures(self) -> dict[str, float]:
        latency = {f"latency_{k}_ms": round(v * 1000, 2) for k, v in percentiles(self.latencies).items()}
        return {
            "edits_per_second": round(self.edits / self.seconds, 1),
            "deliveries_per_second": round(self.deliveries / self.seconds, 1),
            "edits": self.edits,
            "deliveries": self.deliveries,
            "seconds": round(self.seconds, 3),
            **latency,
            "server_cpu_us_per_edit": round(self.server_cpu_seconds / max(1, self.edits) * 1e6, 1),
            "server_cpu_us_per_delivery": round(self.server_cpu_seconds / max(1, self.deliveries) * 1e6, 1),
        }


async def _last_rev(chat_id: int) -> int:
    connection = await asyncpg.connect(DB_DSN)
    try:
        return int(await connection.fetchval("SELECT last_rev FROM chats WHERE id = $1", chat_id))
    finally:
        await connection.close()


async def _run_phase(
    sockets: Sequence[_EditSocket],
    editors: Sequence[_EditSocket],
    per_editor: int,
    window: int,
    tag: str,
    server_cpu: Callable[[], float],
    rate: float | None = None,
) -> _Phase:
    """Every editor makes ``per_editor`` edits; the window closes when every socket has every change."""
    score = sockets[0].score
    before = {id(s): len(s.received) for s in sockets}
    for chat_socket in sockets:
        chat_socket.expect(per_editor * len(editors))
    for editor in editors:
        editor.window = asyncio.Semaphore(window)
    cpu_before, started = server_cpu(), time.perf_counter()
    await asyncio.gather(*(paced(e, per_editor, tag, rate) for e in editors))
    waiting = asyncio.gather(*(s.caught_up.wait() for s in sockets))
    try:
        await asyncio.wait_for(waiting, COMPLETION_TIMEOUT)
    except TimeoutError:
        late = sum(1 for s in sockets if not s.caught_up.is_set())
        score.errors.append(f"gave up after {COMPLETION_TIMEOUT:g}s: {late} sockets still missing changes")
    for editor in editors:
        for _ in range(window):
            await asyncio.wait_for(editor.window.acquire(), COMPLETION_TIMEOUT)
    finished, cpu_after = time.perf_counter(), server_cpu()
    sent_by_rev = {rev: score.sent_at[cid] for cid, rev in score.rev_of.items() if cid.startswith(tag)}
    latencies = [
        arrival - sent_by_rev[rev]
        for chat_socket in sockets
        for rev, arrival in chat_socket.received.items()
        if rev in sent_by_rev and chat_socket not in editors
    ]
    deliveries = sum(len(s.received) - before[id(s)] for s in sockets)
    return _Phase(
        per_editor * len(editors), deliveries, finished - started, cpu_after - cpu_before, latencies
    )


async def _verify(sockets: Sequence[_EditSocket], chat_id: int, first_rev: int) -> list[str]:
    """Every rev of the run reached every socket once, and every socket's newest copies are stored."""
    score = sockets[0].score
    failures = [f"error frame: {e}" for e in score.errors[:5]] + [
        f"socket closed: {c}" for c in score.closes[:5]
    ]
    connection = await asyncpg.connect(DB_DSN)
    try:
        last_rev = int(await connection.fetchval("SELECT last_rev FROM chats WHERE id = $1", chat_id))
        rows = await connection.fetch("SELECT seq, rev, text FROM messages WHERE chat_id = $1", chat_id)
    finally:
        await connection.close()
    stored = {row["seq"]: (row["rev"], row["text"]) for row in rows}
    changes = set(range(first_rev, last_rev + 1))
    unacked = len(score.sent_at) - len(score.rev_of)
    if unacked:
        failures.append(f"{unacked} edits never acknowledged")
    if len(set(score.rev_of.values())) != len(score.rev_of):
        failures.append("two acknowledged edits share a rev")
    missing = sum(len(changes - set(s.received)) for s in sockets)
    duplicated = sum(s.duplicates for s in sockets)
    stale = sum(1 for s in sockets for seq, m in s.newest.items() if stored.get(seq) != (m.rev, m.text))
    for count, what in (
        (missing, "changes lost"),
        (duplicated, "changes delivered twice"),
        (stale, "messages whose newest copy on a socket is not the stored state"),
    ):
        if count:
            failures.append(f"{count} {what}")
    return failures


async def edits(ctx: Context) -> Result:
    """One group of G connected members, S of them editing their own message: CPU per edit and fan-out."""
    p = ctx.params
    result = Result(
        "edits",
        {
            "members": p.group_size,
            "editors": p.senders,
            "edits_per_editor": p.group_messages,
            "window": p.window,
        },
    )
    async with running_server("chat", "edits") as server:
        api = Api(server.base_url)
        members = await api.register_users(p.group_size, "edits")
        chat_id = await api.create_group(members[0], members[1:], "bench edits")
        await api.close()
        score = _Score()
        sockets = [_EditSocket(server.ws_url, chat_id, member, score) for member in members]
        gate = asyncio.Semaphore(64)

        async def connect_one(chat_socket: _EditSocket) -> None:
            async with gate:
                await chat_socket.connect()

        await asyncio.gather(*(connect_one(s) for s in sockets))
        editors = sockets[: p.senders]
        for editor in editors:
            await editor.post()
        first_rev = await _last_rev(chat_id) + 1
        cpu = server.cpu_seconds
        await _run_phase(sockets, editors, WARM_UP_EDITS, 1, "warm", cpu)
        peak = await _run_phase(sockets, editors, p.group_messages, p.window, "peak", cpu)
        per_editor = peak.edits / peak.seconds / 2 / len(editors)
        paced = await _run_phase(sockets, editors, p.group_messages // 2, p.window, "paced", cpu, per_editor)
        failures = await _verify(sockets, chat_id, first_rev)
        await asyncio.gather(*(s.close() for s in sockets))
        result.correctness(failures, server)
    result.figures["peak"] = peak.figures()
    result.figures["paced_half_peak"] = paced.figures()
    p99 = result.figures["paced_half_peak"]["latency_p99_ms"]
    result.target(
        f"p99 edit fan-out latency < 100 ms for {p.group_size} members (half peak rate)", p99, p99 < 100
    )
    return result
