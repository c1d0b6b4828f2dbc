"""The SQL of delivery from the database while the delivery backend is down (see ``windi_chat.poller``).

Each statement covers every chat the process watches in one round trip, whatever their number; the
poller runs them about once a second, and only while the backend is down.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.models import metadata

__all__ = ("members_of", "messages_after", "revoked_among")

_members, _messages, _sessions = (metadata.tables[name] for name in ("chat_members", "messages", "sessions"))


async def messages_after(session: AsyncSession, cursors: Mapping[int, int], limit: int) -> list[Row[Any]]:
    """Up to ``limit`` messages past each chat's cursor (``chat id -> seq``), by chat and seq."""
    wanted = or_(
        *(and_(_messages.c.chat_id == chat_id, _messages.c.seq > seq) for chat_id, seq in cursors.items())
    )
    statement = select(_messages).where(wanted).order_by(_messages.c.chat_id, _messages.c.seq).limit(limit)
    return list((await session.execute(statement)).all())


async def members_of(session: AsyncSession, chat_ids: Collection[int]) -> dict[int, dict[int, int]]:
    """``chat id -> member id -> read marker`` of the chats (a chat with no member is left out)."""
    statement = select(_members.c.chat_id, _members.c.user_id, _members.c.read_seq).where(
        _members.c.chat_id.in_(chat_ids)
    )
    members: dict[int, dict[int, int]] = {}
    for chat_id, user_id, read_seq in await session.execute(statement):
        members.setdefault(chat_id, {})[user_id] = read_seq
    return members


async def revoked_among(session: AsyncSession, session_ids: Collection[str]) -> list[str]:
    """Which of these login sessions have been revoked."""
    statement = select(_sessions.c.id).where(
        _sessions.c.id.in_(session_ids), _sessions.c.revoked_at.is_not(None)
    )
    return list(await session.scalars(statement))
