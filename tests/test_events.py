"""The event funnel: an action's events go out when its transaction commits, and never otherwise."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import make_settings
from windi_chat.database import create_db_config
from windi_chat.events import EventBus, split_event
from windi_chat.schemas import MessageOut

MESSAGE = MessageOut(
    id=1,
    chat_id=7,
    seq=1,
    sender_id=1,
    text="hello",
    timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    client_id="c-1",
    read=False,
    rev=1,
    reply_to=None,
    edited_at=None,
    deleted=False,
    reactions=[],
)


def _published_by(
    url: str, work: Callable[[AsyncSession, EventBus, list[Any]], Awaitable[None]]
) -> list[Any]:
    """Run ``work`` in a session of the app's own kind; return what reached live delivery, decoded."""
    published: list[tuple[str, Any]] = []
    bus = EventBus(lambda payload, channel: published.append((channel, json.loads(split_event(payload)[2]))))

    async def main() -> None:
        config = create_db_config(make_settings(url))
        try:
            async with config.create_session_maker()() as session:
                await work(session, bus, published)
        finally:
            await config.get_engine().dispose()

    asyncio.run(main())
    return published


def test_events_wait_for_the_commit(database_url: str) -> None:
    seen_before_commit: list[int] = []

    async def work(session: AsyncSession, bus: EventBus, published: list[Any]) -> None:
        await session.execute(text("SELECT 1"))
        bus.message(session, MESSAGE)
        bus.read(session, 7, 1, 1, 1)
        seen_before_commit.append(len(published))
        await session.commit()

    published = _published_by(database_url, work)

    assert seen_before_commit == [0]
    assert [(channel, frame["type"]) for channel, frame in published] == [
        ("chat:7", "message"),
        ("chat:7", "read"),
    ]
    assert published[0][1]["message"]["text"] == "hello"


def test_a_rollback_drops_the_events_of_its_transaction(database_url: str) -> None:
    async def work(session: AsyncSession, bus: EventBus, _published: list[Any]) -> None:
        await session.execute(text("SELECT 1"))
        bus.member_removed(session, 7, 2)
        await session.rollback()
        await session.execute(text("SELECT 1"))
        bus.member_added(session, 7, 3)
        await session.commit()

    published = _published_by(database_url, work)

    assert [frame["type"] for _, frame in published] == ["member_added"]


def test_a_session_closed_without_commit_publishes_nothing(database_url: str) -> None:
    async def work(session: AsyncSession, bus: EventBus, _published: list[Any]) -> None:
        await session.execute(text("SELECT 1"))
        bus.message(session, MESSAGE)

    assert _published_by(database_url, work) == []


def test_typing_goes_out_at_once_without_a_transaction(database_url: str) -> None:
    async def work(_session: AsyncSession, bus: EventBus, _published: list[Any]) -> None:
        bus.typing(7, 1, "socket-a")

    assert [frame for _, frame in _published_by(database_url, work)] == [
        {"type": "typing", "chat_id": 7, "user_id": 1}
    ]
