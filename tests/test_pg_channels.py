"""LISTEN/NOTIFY delivery: the payload codec on its own, and the backend on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from itertools import chain, zip_longest
from typing import Any

import asyncpg
import pytest

from tests.conftest import run
from windi_chat import pg_channels
from windi_chat.pg_channels import PayloadAssembler, PostgresChannelsBackend, encode_payloads

NOTIFY_LIMIT = 8000  # PostgreSQL refuses a payload of this many bytes or more
MIXED = "a\N{LATIN SMALL LETTER E WITH ACUTE}\N{EURO SIGN}\N{GRINNING FACE}"  # 1, 2, 3 and 4 bytes


def frame(text: str) -> bytes:
    return f'M1\n{{"text":"{text}"}}'.encode()


def feed_all(assembler: PayloadAssembler, payloads: list[str]) -> list[bytes | None]:
    return [assembler.feed(payload) for payload in payloads]


# The codec ----------------------------------------------------------------------------------------


def test_a_small_event_travels_whole_in_one_payload() -> None:
    data = frame("hello")
    payloads = encode_payloads(data, "0a1b2c3d", 1)
    assert payloads == ["=" + data.decode()]
    assert PayloadAssembler().feed(payloads[0]) == data


@pytest.mark.parametrize("shift", range(4))  # moves every cut across each byte of a character
def test_a_split_event_with_multibyte_characters_joins_back_exactly(shift: int) -> None:
    data = frame("x" * shift + MIXED * 5000)
    payloads = encode_payloads(data, "0a1b2c3d", 7)
    assert len(payloads) > 1
    assert all(payload.startswith("+0a1b2c3d.7:") for payload in payloads)
    assert feed_all(PayloadAssembler(), payloads) == [None] * (len(payloads) - 1) + [data]


@pytest.mark.parametrize(
    ("origin", "event_id"), [("0a1b2c3d", 1), ("0a1b2c3d", 10**18), ("a-much-longer-origin" * 10, 99)]
)
@pytest.mark.parametrize("size", [7899, 7900, 7901, 20_000, 100_000])  # around the threshold and past it
@pytest.mark.parametrize("char", ["a", "\N{EURO SIGN}", "\N{GRINNING FACE}"])
def test_every_payload_stays_under_the_notify_limit(origin: str, event_id: int, size: int, char: str) -> None:
    data = (char * size).encode()[:size]
    data = data[: len(data.decode(errors="ignore").encode())]  # whole characters only
    payloads = encode_payloads(data, origin, event_id)
    assert all(len(payload.encode()) < NOTIFY_LIMIT for payload in payloads)
    assert feed_all(PayloadAssembler(), payloads)[-1] == data


def test_interleaved_parts_of_two_events_join_into_each_event() -> None:
    # Two processes may pick the same number for their events: the origin tells them apart.
    first, second = frame("1" + MIXED * 3000), frame("2" + MIXED * 4000)
    parts = zip_longest(encode_payloads(first, "aaaa0001", 5), encode_payloads(second, "bbbb0002", 5))
    interleaved = [payload for payload in chain.from_iterable(parts) if payload is not None]
    joined = [data for data in feed_all(PayloadAssembler(), interleaved) if data is not None]
    assert sorted(joined) == sorted([first, second])


FOREIGN = ["", "hello", "x0a1b:0:2:piece", "+", "+x:1", "+x::2:p", "+x:-1:2:p", "+x:0:0:p", "+x:2:2:p"]


@pytest.mark.parametrize("payload", FOREIGN)
def test_a_foreign_or_malformed_payload_is_ignored_and_spoils_no_event(payload: str) -> None:
    assembler, data = PayloadAssembler(), frame(MIXED * 1000)
    first, last = encode_payloads(data, "0a1b2c3d", 1)  # 10 kB: two parts
    assert assembler.feed(first) is None
    assert assembler.feed(payload) is None
    assert assembler.feed(last) == data


def test_a_part_that_disagrees_on_the_count_is_ignored() -> None:
    assembler = PayloadAssembler()
    assert assembler.feed("+e.1:0:3:a") is None
    assert assembler.feed("+e.1:1:2:b") is None  # not the 3-part event the first part announced
    assert assembler.feed("+e.1:1:3:b") is None
    assert assembler.feed("+e.1:2:3:c") == b"abc"


def test_parts_of_events_that_never_complete_do_not_pile_up() -> None:
    assembler = PayloadAssembler(max_pending=2)
    for name in ("old", "mid", "new"):
        assert assembler.feed(f"+{name}:0:2:{name}-") is None
    assert assembler.feed("+old:1:2:end") is None  # forgotten: the first part is gone
    assert assembler.feed("+new:1:2:end") == b"new-end"


def test_an_event_name_with_the_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="':'"):
        encode_payloads(b"x" * 10_000, "bad:origin", 1)


# The backend --------------------------------------------------------------------------------------


@pytest.fixture
def dsn(postgres_url: str) -> str:
    return postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def started(dsn: str) -> AsyncIterator[PostgresChannelsBackend]:
    backend = PostgresChannelsBackend(dsn)
    await backend.on_startup()
    try:
        yield backend
    finally:
        await backend.on_shutdown()


async def next_event(stream: AsyncGenerator[tuple[str, bytes], None]) -> tuple[str, bytes]:
    return await asyncio.wait_for(anext(stream), timeout=10)


async def query(dsn: str, statement: str, *args: Any) -> list[Any]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await connection.fetch(statement, *args))
    finally:
        await connection.close()


async def publish_until_received(
    backend: PostgresChannelsBackend, stream: AsyncGenerator[tuple[str, bytes], None], data: bytes
) -> tuple[str, bytes]:
    """The first event of a new stream, published again until the stream has listened again."""
    waiting = asyncio.ensure_future(anext(stream))
    for _ in range(100):
        await backend.publish(data, ["chat:1"])
        done, _pending = await asyncio.wait([waiting], timeout=0.1)
        if done:
            return waiting.result()
    waiting.cancel()
    raise AssertionError("the stream never listened again")


def test_events_of_every_size_reach_subscribed_channels_only_and_foreign_notices_are_ignored(
    dsn: str,
) -> None:
    async def scenario() -> None:
        async with started(dsn) as backend:
            await backend.subscribe(["chat:1", "chat:2"])
            await backend.unsubscribe(["chat:2"])
            stream = backend.stream_events()
            large = frame(MIXED * 4000)
            await backend.publish(b"small", ["chat:1", "chat:2"])
            await query(dsn, "SELECT pg_notify('chat:1', 'not an event')")
            await backend.publish(large, ["chat:1"])
            assert await next_event(stream) == ("chat:1", b"small")
            assert await next_event(stream) == ("chat:1", large)

            names = await query(
                dsn,
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'windi-chat-%' ORDER BY 1",
            )
            assert [row[0] for row in names] == ["windi-chat-listen", "windi-chat-publish"]
            await stream.aclose()

    run(scenario())


def test_a_cut_listen_connection_ends_the_stream_and_the_next_stream_listens_again(dsn: str) -> None:
    async def scenario() -> None:
        async with started(dsn) as backend:
            await backend.subscribe(["chat:1"])
            stream = backend.stream_events()
            await backend.publish(b"before", ["chat:1"])
            assert await next_event(stream) == ("chat:1", b"before")

            cut = await query(
                dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'windi-chat-listen'",
            )
            assert len(cut) == 1
            with pytest.raises(ConnectionError, match="closed"):
                await next_event(stream)

            stream = backend.stream_events()
            assert await publish_until_received(backend, stream, b"after") == ("chat:1", b"after")
            await stream.aclose()

    run(scenario())


def test_a_quiet_listen_connection_that_stops_answering_ends_the_stream(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_channels, "LISTEN_CHECK_SECONDS", 0.05)

    async def scenario() -> None:
        async with started(dsn) as backend:
            await backend.subscribe(["chat:1"])
            stream = backend.stream_events()
            waiting = asyncio.ensure_future(next_event(stream))
            await asyncio.sleep(0.3)  # several checks pass on a healthy connection
            await backend.publish(b"still there", ["chat:1"])
            assert await waiting == ("chat:1", b"still there")

            async def no_answer(*args: Any, **kwargs: Any) -> Any:
                raise TimeoutError

            with monkeypatch.context() as patch:
                patch.setattr(asyncpg.Connection, "fetchval", no_answer)
                with pytest.raises(ConnectionError, match="stopped answering"):
                    await next_event(stream)

            stream = backend.stream_events()  # skips the loss notice of the connection it replaced
            assert await publish_until_received(backend, stream, b"back") == ("chat:1", b"back")
            await stream.aclose()

    run(scenario())


def test_a_failed_publish_drops_its_connection_and_the_next_publish_opens_another(dsn: str) -> None:
    async def scenario() -> None:
        async with started(dsn) as backend:
            await backend.subscribe(["chat:1"])
            stream = backend.stream_events()
            with pytest.raises(asyncpg.PostgresError):
                await backend.publish(b"\x00", ["chat:1"])  # PostgreSQL text cannot hold NUL
            await backend.publish(b"next", ["chat:1"])
            assert await next_event(stream) == ("chat:1", b"next")
            await stream.aclose()

    run(scenario())
