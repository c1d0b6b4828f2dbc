"""What presence reads and writes: a person's chats, and when they were last seen."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.models import ChatMember, User

__all__ = ("chats_of", "mark_seen")


async def chats_of(session: AsyncSession, user_id: int) -> list[int]:
    """The chats ``user_id`` is a member of (the index on ``chat_members.user_id`` serves this)."""
    return list(await session.scalars(select(ChatMember.chat_id).where(ChatMember.user_id == user_id)))


async def mark_seen(session: AsyncSession, user_ids: Collection[int], at: datetime) -> None:
    """Record ``at`` as when these people were last known online."""
    await session.execute(update(User).where(User.id.in_(list(user_ids))).values(last_seen_at=at))
