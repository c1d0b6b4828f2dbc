"""The search scenario: full-text search over a million bulk-loaded messages.

The texts are eight words each, drawn from 20,000 words with a skewed (power-law) frequency, so
there are rare words and very common ones: ``w0`` is in about half the messages. The searcher is a
member of most chats but not of all, so membership is checked on every match.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench.load import Api, percentiles
from bench.procs import DB_DSN, running_server
from bench.scenarios import Context, Result

__all__ = ("search",)

SEARCH_TARGET_MS = 20.0
VOCABULARY = 20_000
WORDS_PER_MESSAGE = 8
SEARCHER_CHATS = 10
OTHER_CHATS = 2  # a private chat and a group the searcher is not in
LIMIT = 20
# A rare word (about 0.1% of the messages), one of middling frequency (about 0.5%) and the most common
# (about half of them), with the share of the messages each is in.
QUERIES = {"one_word": "w1000", "middling_word": "w100", "common_word": "w0"}


def _word(rng: random.Random) -> str:
    return f"w{int(VOCABULARY * rng.random() ** 4)}"


def _rows(chat_ids: list[int], sender_id: int, count: int) -> Iterator[tuple[Any, ...]]:
    """Messages spread over the chats in turn, each chat's seqs (and revs) 1, 2, 3..."""
    rng = random.Random(15)  # noqa: S311 - the same texts on every run, not secrets
    start = datetime.now(UTC) - timedelta(seconds=count)
    for number in range(count):
        seq = number // len(chat_ids) + 1
        text = " ".join(_word(rng) for _ in range(WORDS_PER_MESSAGE))
        created = start + timedelta(seconds=number)
        yield (chat_ids[number % len(chat_ids)], seq, seq, sender_id, f"s{number}", text, created)


async def _bulk_load(chat_ids: list[int], sender_id: int, count: int) -> float:
    """COPY the messages in as a bulk load would: without the full-text index, built again afterwards
    from its own definition, then ANALYZE, which gives the planner the words' frequencies."""
    started = time.perf_counter()
    connection = await asyncpg.connect(DB_DSN)
    try:
        definition = await connection.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_messages_text_search'"
        )
        async with connection.transaction():
            await connection.execute("DROP INDEX ix_messages_text_search")
            await connection.copy_records_to_table(
                "messages",
                records=_rows(chat_ids, sender_id, count),
                columns=["chat_id", "seq", "rev", "sender_id", "client_id", "text", "created_at"],
            )
            await connection.execute(
                "UPDATE chats SET last_seq = $2, last_rev = $2, last_activity_at = now() WHERE id = ANY($1)",
                chat_ids,
                -(-count // len(chat_ids)),
            )
            await connection.execute(definition)
        await connection.execute("VACUUM ANALYZE messages")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def _shares(words: list[str]) -> dict[str, float]:
    """The share of all messages that hold each word, as the index counts it."""
    connection = await asyncpg.connect(DB_DSN)
    try:
        total = await connection.fetchval("SELECT count(*) FROM messages")
        shares = {}
        for word in words:
            matches = await connection.fetchval(
                "SELECT count(*) FROM messages WHERE to_tsvector('simple', text) @@ to_tsquery('simple', $1)",
                word,
            )
            shares[word] = round(matches / max(total, 1), 4)
        return shares
    finally:
        await connection.close()


async def _plan(user_id: int, word: str) -> dict[str, Any]:
    """The plan of the search statement for this word, as the server runs it, with its database time."""
    from windi_chat.search import parse_query
    from windi_chat.search_sql import PG_SEARCH

    sql = PG_SEARCH[False].element.text
    for number, name in enumerate(("q", "person", "candidates", "limit"), start=1):
        sql = sql.replace(f":{name}", f"${number}")
    connection = await asyncpg.connect(DB_DSN)
    try:
        await connection.execute("SET max_parallel_workers_per_gather = 0")
        rows = await connection.fetch(
            f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", parse_query(word, 256).websearch(), user_id, 200, LIMIT
        )
    finally:
        await connection.close()
    lines = [row[0] for row in rows]
    scans = [line.strip().removeprefix("->").strip().split("  ")[0] for line in lines if "Scan" in line]
    execution = next((line for line in lines if line.startswith("Execution Time")), "")
    return {
        "scans": scans,
        "uses_gin_index": any("ix_messages_text_search" in line for line in lines),
        "seq_scan_of_messages": any("Seq Scan on messages" in line for line in lines),
        "database_ms": float(execution.split(":")[1].split()[0]) if execution else None,
    }


async def search(ctx: Context) -> Result:
    """Sequential one-word searches over ``--search-messages`` messages: a rare word and a common one."""
    p = ctx.params
    result = Result(
        "search",
        {
            "messages": p.search_messages,
            "requests": p.search_requests,
            "limit": LIMIT,
            "chats": f"{SEARCHER_CHATS} of the searcher's, {OTHER_CHATS} not",
        },
    )
    result.notes.append(
        "latencies are client-measured (keep-alive httpx), so they include the client and HTTP"
    )
    problems: list[str] = []
    async with running_server("chat", "search") as server:
        api = Api(server.base_url)
        searcher, friend, stranger = await api.register_users(3, "search")
        chat_ids = [await api.create_group(friend, [searcher], f"g{n}") for n in range(SEARCHER_CHATS)]
        chat_ids += [
            await api.open_private(friend, stranger),
            await api.create_group(stranger, [friend], "theirs"),
        ]
        await api.close()
        result.figures["bulk_load_seconds"] = round(
            await _bulk_load(chat_ids, friend.user_id, p.search_messages), 1
        )
        result.figures["share_of_messages"] = await _shares(list(QUERIES.values()))
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {searcher.token}"}, timeout=60
        ) as client:
            for name, word in QUERIES.items():
                figures, found = await _time_searches(client, server.cpu_seconds, word, p.search_requests)
                figures["plan"] = await _plan(searcher.user_id, word)
                result.figures[name] = figures
                problems += found
        result.correctness(problems, server)
    for name in ("one_word", "common_word"):
        p99 = result.figures[name]["p99_ms"]
        result.target(
            f"{name} search p99 < {SEARCH_TARGET_MS:g} ms (client-measured)", p99, p99 < SEARCH_TARGET_MS
        )
    plans = [result.figures[name]["plan"] for name in QUERIES]
    result.target(
        "no sequential scan of messages",
        sum(plan["seq_scan_of_messages"] for plan in plans),
        not any(plan["seq_scan_of_messages"] for plan in plans),
    )
    return result


async def _time_searches(
    client: httpx.AsyncClient, server_cpu: Any, word: str, requests: int
) -> tuple[dict[str, Any], list[str]]:
    params = {"q": word, "limit": LIMIT}
    problems: list[str] = []
    for _ in range(min(10, requests)):  # warm-up
        (await client.get("/search", params=params)).raise_for_status()
    latencies = []
    cpu_before = server_cpu()
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get("/search", params=params)
        latencies.append(time.perf_counter() - started)
        found = response.json() if response.status_code == 200 else []
        if len(found) != LIMIT or any(word not in message["text"].split() for message in found):
            problems.append(f"/search?q={word}: status {response.status_code}, {len(found)} results")
    cpu = server_cpu() - cpu_before
    figures: dict[str, Any] = {f"{k}_ms": round(v * 1000, 2) for k, v in percentiles(latencies).items()}
    figures["server_cpu_us_per_request"] = round(cpu / requests * 1e6, 1)
    return figures, problems[:3]
