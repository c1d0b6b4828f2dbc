"""Instructions per batch of the writer's path, counted rather than timed.

CPU time per message (``bench.send_cpu``) moves by tens of percent from one run to the next on a shared
machine. An instruction count does not: run this twice under callgrind, with two numbers of batches,
and the difference divided by the difference in batches is what one batch costs the server's process
(its PostgreSQL backend is not counted):

    python -m bench.writer_count setup
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m bench.writer_count 0 8
    python -m bench.writer_count setup
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m bench.writer_count 200 8

("Collected" on the last line is the count). ``PYTHONHASHSEED=0`` keeps the two runs alike.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from bench.send_cpu import _sends, bench_config, fresh_database
from windi_chat.messaging import batch_results
from windi_chat.models import utcnow
from windi_chat.pg_batch import store_batch

WARM_UP = 20  # batches before the counted ones: the statement and the function are prepared by then


async def setup() -> None:
    config = bench_config()
    await fresh_database(config)
    await config.get_engine().dispose()


async def store(batches: int, size: int) -> None:
    """``WARM_UP`` batches, then ``batches`` more, of ``size`` sends each, with their answers and events."""
    engine = bench_config().get_engine()
    async with engine.connect() as connection:  # held, as the writer does while batches follow
        for index in range(WARM_UP + batches):
            stored = await store_batch(connection, _sends(size, index * size, "counted"), utcnow())
            batch_results(stored, {})
    await engine.dispose()


if __name__ == "__main__":
    if sys.argv[1:] == ["setup"]:
        asyncio.run(setup())
    else:
        uvloop.run(store(int(sys.argv[1]), int(sys.argv[2])))
