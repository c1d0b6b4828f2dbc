"""The capacity scenarios: many idle sockets on one process, and history pages of a very long chat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench.load import Api, ChatSocket, Ledger, connect_all, percentiles, run_phase, verify
from bench.procs import CHEAP_ARGON2, DB_DSN, running_server
from bench.scenarios import Context, Result

__all__ = ("history", "idle")

SETTLE_SECONDS = 3.0
MEMORY_TARGET_KIB = 50
SOCKETS_TARGET = 10_000
HISTORY_TARGET_MS = 5.0
PAGE = 50


async def idle(ctx: Context) -> Result:
    """N authenticated idle sockets: server memory per socket, connect rate, then one message per chat."""
    p = ctx.params
    per_chat = 2 * p.devices
    chats = -(-p.sockets // per_chat)
    result = Result(
        "idle",
        {
            "sockets": chats * per_chat,
            "devices_per_user": p.devices,
            "private_chats": chats,
            "argon2": "t=1, 1 MiB",
        },
    )
    result.notes.append(
        "accounts registered over REST with WINDI_ARGON2_TIME_COST=1, WINDI_ARGON2_MEMORY_KIB=1024"
    )
    async with running_server("chat", "idle", CHEAP_ARGON2) as server:
        api = Api(server.base_url, concurrency=16)
        members = await api.register_users(2 * chats, "idle")
        couples = list(zip(members[::2], members[1::2], strict=True))
        chat_ids = await asyncio.gather(*(api.open_private(a, b) for a, b in couples))
        await api.close()
        ledger = Ledger()
        sockets = [
            ChatSocket(server.ws_url, chat_id, member, ledger, device)
            for chat_id, couple in zip(chat_ids, couples, strict=True)
            for member in couple
            for device in range(p.devices)
        ]
        await asyncio.sleep(SETTLE_SECONDS)
        rss_before, cpu_before = server.rss_kib(), server.cpu_seconds()
        connect_seconds = await connect_all(sockets, concurrency=100)
        cpu_connect = server.cpu_seconds() - cpu_before
        await asyncio.sleep(SETTLE_SECONDS)
        rss_after = server.rss_kib()
        senders = sockets[::per_chat]
        phase = await run_phase(sockets, senders, 1, 1, "idle", server.cpu_seconds)
        failures = await verify(sockets, DB_DSN)
        await _close_all(sockets)
        result.correctness(failures, server)
    per_socket = (rss_after - rss_before) / len(sockets)
    result.figures.update(
        {
            "server_rss_before_mib": round(rss_before / 1024, 1),
            "server_rss_after_mib": round(rss_after / 1024, 1),
            "server_kib_per_socket": round(per_socket, 1),
            "connects_per_second": round(len(sockets) / connect_seconds, 1),
            "server_cpu_us_per_connect": round(cpu_connect / len(sockets) * 1e6, 1),
            "message_to_every_chat": phase.figures(),
        }
    )
    result.target(
        f"<= {MEMORY_TARGET_KIB} KiB server memory per idle socket", round(per_socket, 1), per_socket <= 50
    )
    enough = len(sockets) >= SOCKETS_TARGET
    result.target(
        f"{SOCKETS_TARGET} sockets on one process",
        len(sockets),
        (not failures) if enough else None,
    )
    return result


async def _close_all(sockets: list[ChatSocket], concurrency: int = 500) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(chat_socket: ChatSocket) -> None:
        async with gate:
            await chat_socket.close()

    await asyncio.gather(*(one(s) for s in sockets))


def _rows(chat_id: int, sender_id: int, count: int) -> Iterator[tuple[Any, ...]]:
    start = datetime.now(UTC) - timedelta(seconds=count)
    for seq in range(1, count + 1):
        yield (
            chat_id,
            seq,
            seq,
            sender_id,
            f"h{seq}",
            f"history message number {seq}",
            start + timedelta(seconds=seq),
        )


async def _bulk_load(chat_id: int, sender_id: int, count: int) -> float:
    """COPY ``count`` messages into the chat, as if its members had sent them, and bump its counter."""
    started = time.perf_counter()
    connection = await asyncpg.connect(DB_DSN)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "messages",
                records=_rows(chat_id, sender_id, count),
                columns=["chat_id", "seq", "rev", "sender_id", "client_id", "text", "created_at"],
            )
            await connection.execute(
                "UPDATE chats SET last_seq = $2, last_rev = $2, last_activity_at = now() WHERE id = $1",
                chat_id,
                count,
            )
        await connection.execute("ANALYZE messages")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def history(ctx: Context) -> Result:
    """Pages of a chat with a million messages: newest, after_seq in the middle, a deep offset."""
    p = ctx.params
    last = p.history_messages
    result = Result(
        "history",
        {
            "messages": last,
            "page": PAGE,
            "requests": p.history_requests,
            "offset_requests": p.offset_requests,
        },
    )
    result.notes.append(
        "latencies are client-measured (keep-alive httpx), so they include the client and HTTP"
    )
    async with running_server("chat", "history") as server:
        api = Api(server.base_url)
        alice, bob = await api.register_users(2, "history")
        chat_id = await api.open_private(alice, bob)
        await api.close()
        result.figures["bulk_load_seconds"] = round(await _bulk_load(chat_id, alice.user_id, last), 1)
        pages = {
            "newest": ({"before_seq": last + 1}, last - PAGE + 1, p.history_requests),
            "after_seq_middle": ({"after_seq": last // 2}, last // 2 + 1, p.history_requests),
            "deep_offset": ({"offset": last - last // 10}, last - last // 10 + 1, p.offset_requests),
        }
        page_problems: list[str] = []
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {alice.token}"}, timeout=60
        ) as client:
            for name, (query, first_seq, requests) in pages.items():
                figures, problems = await _time_pages(
                    client, server.cpu_seconds, f"/history/{chat_id}", query, first_seq, requests
                )
                result.figures[name] = figures
                page_problems += problems
        result.correctness(page_problems, server)
    for name in ("newest", "after_seq_middle"):
        p99 = result.figures[name]["p99_ms"]
        result.target(
            f"{name} page p99 < {HISTORY_TARGET_MS:g} ms (client-measured)", p99, p99 < HISTORY_TARGET_MS
        )
    return result


async def _time_pages(
    client: httpx.AsyncClient,
    server_cpu: Any,
    path: str,
    query: dict[str, int],
    first_seq: int,
    requests: int,
) -> tuple[dict[str, float], list[str]]:
    params = {"limit": PAGE, **query}
    problems: list[str] = []
    for _ in range(min(10, requests)):  # warm-up
        (await client.get(path, params=params)).raise_for_status()
    latencies = []
    cpu_before = server_cpu()
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get(path, params=params)
        latencies.append(time.perf_counter() - started)
        seqs = [message["seq"] for message in response.json()] if response.status_code == 200 else []
        if seqs != list(range(first_seq, first_seq + PAGE)):
            problems.append(f"{path}?{query}: status {response.status_code}, seqs {seqs[:1]}..{seqs[-1:]}")
    cpu = server_cpu() - cpu_before
    figures = {f"{k}_ms": round(v * 1000, 2) for k, v in percentiles(latencies).items()}
    figures["server_cpu_us_per_request"] = round(cpu / requests * 1e6, 1)
    return figures, problems[:3]
