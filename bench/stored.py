"""What the database says about a run: its write-ahead log, and the writer's batches as stored.

The server's writer stamps every message of a batch with the batch's start time, so the rows alone
tell how big each batch was and how long the writer took from one to the next.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import asyncpg

from bench.load import percentiles

__all__ = ("batch_sizes", "wal_position", "writer_timeline")


async def _fetch(dsn: str, query: str, *arguments: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *arguments)
        return rows
    finally:
        await connection.close()


async def wal_position(dsn: str) -> int:
    """Bytes of write-ahead log the cluster has written so far.

    Each commit waits for its log to reach the disk, so log bytes per message say how much of a
    batch's round trip its flush can take.
    """
    rows = await _fetch(dsn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS position")
    return int(rows[0]["position"])


async def batch_sizes(dsn: str) -> dict[str, float]:
    """Percentiles of how many messages the server stored per transaction.

    The messages of one batch share the batch's timestamp, so counting rows per ``created_at`` tells
    the batch sizes from the database alone (repeats, which store nothing, are not counted).
    """
    counts = await _fetch(dsn, "SELECT count(*) AS size FROM messages GROUP BY created_at")
    return percentiles([row["size"] for row in counts])


async def writer_timeline(dsn: str, tag: str) -> dict[str, float]:
    """The batches of one window (its sends' client ids start with ``tag``): how many, how big, and
    the time from one batch's start to the next one's, in ms.

    That gap is a batch's round trip to the database plus the writer's own work around it; every
    send that arrives meanwhile waits for it before its own batch can start. So when a window's
    latency p99 is far above its longest gaps, much of the tail was not the writer's.
    """
    rows = await _fetch(
        dsn,
        "SELECT count(*) AS size, created_at FROM messages WHERE client_id LIKE $1 "
        "GROUP BY created_at ORDER BY created_at",
        f"{tag}-%",
    )
    sizes = percentiles([row["size"] for row in rows], (50, 99))
    starts = [row["created_at"] for row in rows]
    gaps = [(later - earlier).total_seconds() * 1000 for earlier, later in pairwise(starts)]
    gap_ms = {key: round(value, 2) for key, value in percentiles(gaps, (50, 99)).items()}
    return {
        "batches": len(rows),
        **{f"batch_{key}": value for key, value in sizes.items()},
        **{f"batch_gap_{key}_ms": value for key, value in gap_ms.items()},
    }
