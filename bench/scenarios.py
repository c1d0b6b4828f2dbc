"""The message-rate scenarios (pairs, group, login) and the two limits they are compared with.

Each scenario starts its own server on a fresh database, sets up people and chats over REST, warms
up, then measures a peak window (as fast as the window of unacknowledged sends allows) and a paced
window at half that rate, where latency means something. Correctness is checked after every scenario.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.load import (
    Api,
    ChatSocket,
    Ledger,
    Member,
    Phase,
    connect_all,
    percentiles,
    run_phase,
    verify,
)
from bench.procs import (
    ADMIN_DSN,
    BENCH_DB,
    CHEAP_ARGON2,
    DB_DSN,
    ServerProcess,
    reset_database,
    running_server,
)
from bench.stored import batch_sizes, wal_position, writer_timeline

__all__ = ("Context", "Params", "Result", "group", "limits", "login", "pairs", "pairs_redis")

WARM_UP_MESSAGES = 3


@dataclass
class Params:
    """Every knob of every scenario; ``smoke()`` gives the tiny set CI runs."""

    pairs: int = 100
    messages: int = 200
    window: int = 10
    # Acks a second of the paced window of ``pairs`` (0: half the peak just measured). A fixed rate
    # compares latency across versions whose peaks differ.
    paced_rate: float = 0.0
    group_size: int = 500
    senders: int = 5
    group_messages: int = 100
    sockets: int = 5000
    devices: int = 5
    history_messages: int = 1_000_000
    history_requests: int = 200
    offset_requests: int = 50
    search_messages: int = 1_000_000
    search_requests: int = 200
    login_concurrency: int = 8
    limit_seconds: float = 5.0
    db_pool_size: int = 10
    redis_url: str = "redis://127.0.0.1:6379/0"
    abuse_samples: int = 200
    abuse_sockets: int = 32
    gateway_people: int = 2000
    gateway_chats: int = 20
    gateway_group: int = 10
    gateway_messages: int = 2000
    gateway_rate: float = 100.0

    @classmethod
    def smoke(cls) -> Params:
        return cls(
            pairs=5,
            messages=20,
            window=5,
            group_size=20,
            senders=3,
            group_messages=20,
            sockets=100,
            devices=5,
            history_messages=20_000,
            history_requests=20,
            offset_requests=5,
            search_messages=20_000,
            search_requests=20,
            login_concurrency=2,
            limit_seconds=1.0,
            abuse_samples=25,
            abuse_sockets=8,
            gateway_people=40,
            gateway_chats=4,
            gateway_group=5,
            gateway_messages=40,
            gateway_rate=20.0,
        )


@dataclass
class Result:
    name: str
    parameters: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, description: str, value: Any, met: bool | None) -> None:
        self.targets.append({"target": description, "value": value, "met": met})

    def correctness(self, failures: list[str], server: ServerProcess | None = None) -> None:
        errors = server.error_lines() if server is not None else []
        self.failures += failures + [f"server logged: {line[:300]}" for line in errors[:5]]
        if server is not None:
            self.figures["server_error_lines"] = len(errors)
        self.target("zero lost, duplicated or out-of-order messages", len(failures), not failures)


@dataclass
class Context:
    """What scenarios of one run share: parameters, and measurements that later scenarios compare with."""

    params: Params
    profile: Callable[[ServerProcess, str], Awaitable[Any]] | None = None
    pairs_peak: dict[int, float] = field(default_factory=dict)  # pairs -> acked/s
    _limits: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    async def limit(
        self, key: tuple[Any, ...], measure: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        if key not in self._limits:
            self._limits[key] = await measure()
        return self._limits[key]

    async def db_limit(self) -> dict[str, Any]:
        p = self.params
        return await self.limit(("db", p.db_pool_size, p.limit_seconds), lambda: db_insert_limit(p))

    async def ws_limit(self) -> dict[str, Any]:
        p = self.params
        key = ("ws", p.group_size, p.senders, p.group_messages, p.window)
        return await self.limit(key, lambda: echo_limit(p.group_size, p.senders, p.group_messages, p.window))


async def _measured(ctx: Context, server: ServerProcess, name: str, phase: Awaitable[Phase]) -> Phase:
    """Run a phase, with the profiler attached to the server if one was asked for."""
    if ctx.profile is None:
        return await phase
    profiler = asyncio.get_running_loop().create_task(ctx.profile(server, name))
    try:
        return await phase
    finally:
        profiler.cancel()
        await asyncio.gather(profiler, return_exceptions=True)


async def _pair_sockets(
    servers: Sequence[ServerProcess], count: int, prefix: str
) -> tuple[Api, list[ChatSocket]]:
    """``count`` private chats; with two servers, each chat's members are on different ones."""
    api = Api(servers[0].base_url)
    members = await api.register_users(2 * count, prefix)
    couples = list(zip(members[::2], members[1::2], strict=True))
    chat_ids = await asyncio.gather(*(api.open_private(a, b) for a, b in couples))
    ledger = Ledger()
    sockets = [
        ChatSocket(servers[side % len(servers)].ws_url, chat_id, member, ledger)
        for chat_id, couple in zip(chat_ids, couples, strict=True)
        for side, member in enumerate(couple)
    ]
    await connect_all(sockets)
    await run_phase(sockets, sockets, WARM_UP_MESSAGES, 1, "warm", _cpu_of(servers))
    return api, sockets


def _cpu_of(servers: Sequence[ServerProcess]) -> Callable[[], float]:
    """CPU seconds of all the servers together."""
    return lambda: sum(server.cpu_seconds() for server in servers)


async def _close(sockets: Sequence[ChatSocket]) -> None:
    await asyncio.gather(*(s.close() for s in sockets))


def _ratio(value: float, limit: float) -> float:
    return round(value / limit, 3) if limit else 0.0


async def _pairs_load(
    ctx: Context, servers: Sequence[ServerProcess], prefix: str, profile: bool
) -> tuple[Phase, Phase, list[str]]:
    """Connect the pairs, send at peak, then paced at half the peak rate; check and close."""
    p = ctx.params
    cpu = _cpu_of(servers)
    api, sockets = await _pair_sockets(servers, p.pairs, prefix)
    logged = await wal_position(DB_DSN)
    peak_phase = run_phase(sockets, sockets, p.messages, p.window, "peak", cpu)
    peak = await (_measured(ctx, servers[0], prefix, peak_phase) if profile else peak_phase)
    peak_logged = await wal_position(DB_DSN)
    peak.wal_bytes = peak_logged - logged
    per_sender = (p.paced_rate or peak.acked / peak.seconds / 2) / len(sockets)
    paced_phase = run_phase(sockets, sockets, p.messages // 2, p.window, "paced", cpu, per_sender)
    paced = await (_measured(ctx, servers[0], f"{prefix}-paced", paced_phase) if profile else paced_phase)
    paced.wal_bytes = await wal_position(DB_DSN) - peak_logged
    if len(servers) == 1:  # two writers' batches would interleave in one timeline
        peak.writer = await writer_timeline(DB_DSN, "peak")
        paced.writer = await writer_timeline(DB_DSN, "paced")
    failures = await verify(sockets, DB_DSN)
    await _close(sockets)
    await api.close()
    return peak, paced, failures


async def pairs(ctx: Context) -> Result:
    """P private chats, both members connected, each member sending M with W unacknowledged."""
    p = ctx.params
    result = Result("pairs", {"pairs": p.pairs, "messages_per_member": p.messages, "window": p.window})
    async with running_server("chat", "pairs") as server:
        peak, paced, failures = await _pairs_load(ctx, [server], "pairs", profile=True)
        result.correctness(failures, server)
        result.figures["batch_size"] = await batch_sizes(DB_DSN)
    peak_rate = peak.acked / peak.seconds
    ctx.pairs_peak[p.pairs] = peak_rate
    limit = await ctx.db_limit()
    result.figures["peak"] = peak.figures()
    result.figures["paced_half_peak"] = paced.figures()
    ratio = _ratio(peak_rate, limit["rows_per_second"])
    result.figures["ratio_to_limit_a"] = ratio
    cpu = result.figures["peak"]["server_cpu_us_per_ack"]
    result.target("server CPU <= 150 us per acked message (peak)", cpu, cpu <= 150)
    result.target("acked msg/s >= 1.0x limit (a)", ratio, ratio >= 1.0)
    p99 = result.figures["paced_half_peak"]["latency_p99_ms"]
    result.target("p99 send-to-delivery < 25 ms at half peak rate", p99, p99 < 25)
    return result


async def pairs_redis(ctx: Context) -> Result:
    """``pairs`` on two server processes sharing Redis, each chat's members on different processes.

    CPU per message is the two processes together; compare with the one-process ``pairs``.
    """
    p = ctx.params
    result = Result(
        "pairs_redis",
        {"pairs": p.pairs, "messages_per_member": p.messages, "window": p.window, "processes": 2},
    )
    # One deployment: the same delivery backend and the same signing secret on both processes.
    shared = {"WINDI_CHANNELS_URL": p.redis_url, "WINDI_JWT_SECRET": secrets.token_urlsafe(36)}
    async with (
        running_server("chat", "pairs-redis-a", shared) as first,
        running_server("chat", "pairs-redis-b", shared, fresh_database=False) as second,
    ):
        peak, paced, failures = await _pairs_load(ctx, [first, second], "pairs-redis", profile=False)
        result.correctness(
            failures + [f"second server logged: {line[:300]}" for line in second.error_lines()], first
        )
        result.figures["batch_size"] = await batch_sizes(DB_DSN)
    result.figures["peak"] = peak.figures()
    result.figures["paced_half_peak"] = paced.figures()
    one_process = ctx.pairs_peak.get(p.pairs)
    if one_process:
        result.figures["ratio_to_one_process_pairs"] = _ratio(peak.acked / peak.seconds, one_process)
    return result


async def group(ctx: Context) -> Result:
    """One group of G connected members, S of them sending: fan-out throughput and latency."""
    p = ctx.params
    result = Result(
        "group",
        {
            "members": p.group_size,
            "senders": p.senders,
            "messages_per_sender": p.group_messages,
            "window": p.window,
        },
    )
    async with running_server("chat", "group", CHEAP_ARGON2) as server:
        api = Api(server.base_url)
        members = await api.register_users(p.group_size, "group")
        chat_id = await api.create_group(members[0], members[1:], "bench group")
        ledger = Ledger()
        sockets = [ChatSocket(server.ws_url, chat_id, member, ledger) for member in members]
        await connect_all(sockets)
        senders = sockets[: p.senders]
        await run_phase(sockets, senders, WARM_UP_MESSAGES, 1, "warm", server.cpu_seconds)
        peak = await _measured(
            ctx,
            server,
            "group",
            run_phase(sockets, senders, p.group_messages, p.window, "peak", server.cpu_seconds),
        )
        per_sender = peak.acked / peak.seconds / 2 / len(senders)
        paced = await run_phase(
            sockets, senders, p.group_messages // 2, p.window, "paced", server.cpu_seconds, per_sender
        )
        # Every member sends one message at the same moment: the burst must be stored whole.
        burst = await run_phase(sockets, sockets, 1, 1, "burst", server.cpu_seconds)
        failures = await verify(sockets, DB_DSN)
        await _close(sockets)
        await api.close()
        result.correctness(failures, server)
        result.figures["batch_size"] = await batch_sizes(DB_DSN)
    limit = await ctx.ws_limit()
    result.figures["peak"] = peak.figures()
    result.figures["paced_half_peak"] = paced.figures()
    result.figures["burst"] = burst.figures()
    ratio = _ratio(result.figures["peak"]["deliveries_per_second"], limit["deliveries_per_second"])
    result.figures["ratio_to_limit_b"] = ratio
    result.target("deliveries/s >= 50% of limit (b)", ratio, ratio >= 0.5)
    p99 = result.figures["paced_half_peak"]["latency_p99_ms"]
    result.target(f"p99 fan-out latency < 100 ms for {p.group_size} members (half peak rate)", p99, p99 < 100)
    slowest_ack = result.figures["burst"]["ack_latency_max_ms"]
    result.target(
        f"burst: {p.group_size} simultaneous sends all stored and each acked within 5 s",
        slowest_ack,
        burst.acked == p.group_size and slowest_ack < 5000,
    )
    return result


async def login(ctx: Context) -> Result:
    """A burst of logins during ``pairs`` at half its peak rate, against the same paced run without."""
    p = ctx.params
    result = Result(
        "login",
        {"pairs": p.pairs, "messages_per_member": p.messages // 2, "login_concurrency": p.login_concurrency},
    )
    async with running_server("chat", "login") as server:
        api, sockets = await _pair_sockets([server], p.pairs, "login")
        peak_rate = ctx.pairs_peak.get(p.pairs)
        if peak_rate is None:
            peak = await run_phase(sockets, sockets, p.messages // 2, p.window, "peak", server.cpu_seconds)
            peak_rate = peak.acked / peak.seconds
            result.notes.append("peak rate measured here (pairs did not run before in this run)")
        per_sender = peak_rate / 2 / len(sockets)
        count = p.messages // 2
        quiet = await run_phase(sockets, sockets, count, p.window, "quiet", server.cpu_seconds, per_sender)
        stop = asyncio.Event()
        login_latencies: list[float] = []
        people = itertools.cycle({s.user_id: s.member for s in sockets}.values())
        logins = Api(server.base_url, concurrency=p.login_concurrency)

        async def log_in_repeatedly() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                await logins.login(next(people).email)
                login_latencies.append(time.perf_counter() - started)

        workers = [asyncio.create_task(log_in_repeatedly()) for _ in range(p.login_concurrency)]
        started = time.perf_counter()
        try:
            busy = await run_phase(sockets, sockets, count, p.window, "busy", server.cpu_seconds, per_sender)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        login_seconds = time.perf_counter() - started
        failures = await verify(sockets, DB_DSN)
        await _close(sockets)
        await api.close()
        await logins.close()
        result.correctness(failures, server)
    result.figures["paced_without_logins"] = quiet.figures()
    result.figures["paced_with_logins"] = busy.figures()
    result.figures["logins"] = len(login_latencies)
    result.figures["logins_per_second"] = round(len(login_latencies) / login_seconds, 1)
    result.figures.update(
        {f"login_latency_{k}_ms": round(v * 1000, 1) for k, v in percentiles(login_latencies).items()}
    )
    before, after = quiet.figures()["latency_p99_ms"], busy.figures()["latency_p99_ms"]
    result.figures["message_p99_change_ms"] = round(after - before, 2)
    result.target("message p99 with logins < 25 ms (argon2 off the event loop)", after, after < 25)
    return result


async def db_insert_limit(p: Params) -> dict[str, Any]:
    """Limit (a): one message-like row per transaction, at the server's pool concurrency, bare asyncpg."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", BENCH_DB)
    finally:
        await admin.close()
    if not exists:
        await reset_database()
    setup = await asyncpg.connect(DB_DSN)
    await setup.execute(
        """
        DROP TABLE IF EXISTS bench_scratch;
        CREATE TABLE bench_scratch (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            chat_id BIGINT NOT NULL, seq BIGINT NOT NULL, sender_id BIGINT NOT NULL,
            client_id VARCHAR(64) NOT NULL, text TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            UNIQUE (chat_id, seq), UNIQUE (chat_id, sender_id, client_id));
        """
    )
    deadline = time.perf_counter() + p.limit_seconds
    counts = [0] * p.db_pool_size

    async def worker(index: int) -> None:
        connection = await asyncpg.connect(DB_DSN)
        insert = await connection.prepare(
            "INSERT INTO bench_scratch (chat_id, seq, sender_id, client_id, text, created_at) "
            "VALUES ($1, $2, $3, $4, $5, now()) RETURNING id"
        )
        try:
            while time.perf_counter() < deadline:
                counts[index] += 1
                async with connection.transaction():
                    await insert.fetchval(index, counts[index], index, f"c{counts[index]}", "a message")
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(p.db_pool_size)))
    seconds = time.perf_counter() - started
    await setup.execute("DROP TABLE bench_scratch")
    await setup.close()
    return {
        "rows_per_second": round(sum(counts) / seconds, 1),
        "rows": sum(counts),
        "concurrency": p.db_pool_size,
    }


async def echo_limit(members: int, senders: int, per_sender: int, window: int) -> dict[str, Any]:
    """Limit (b): the group load, same client code, against the bare broadcast server."""
    async with running_server("echo", "echo") as server:
        ledger = Ledger()
        people = [Member(user_id=i + 1, email="", token=str(i + 1)) for i in range(members)]
        sockets = [ChatSocket(server.ws_url, 1, member, ledger) for member in people]
        await connect_all(sockets)
        await run_phase(sockets, sockets[:senders], WARM_UP_MESSAGES, 1, "warm", server.cpu_seconds)
        phase = await run_phase(sockets, sockets[:senders], per_sender, window, "peak", server.cpu_seconds)
        failures = await verify(sockets, None)
        await _close(sockets)
    if failures:
        raise RuntimeError(f"echo server lost or duplicated frames: {failures}")
    return phase.figures()


async def limits(ctx: Context) -> Result:
    """Both limits on their own, for the record."""
    p = ctx.params
    result = Result(
        "limits",
        {
            "db_concurrency": p.db_pool_size,
            "db_seconds": p.limit_seconds,
            "ws_members": p.group_size,
            "ws_senders": p.senders,
            "ws_messages_per_sender": p.group_messages,
            "window": p.window,
        },
    )
    result.figures["a_db_insert"] = await ctx.db_limit()
    result.figures["b_ws_broadcast"] = await ctx.ws_limit()
    return result
