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

__all__ = ("changes_after", "members_of", "messages_after", "reactions_of", "revoked_among")

_members, _messages, _reactions, _sessions = (
    metadata.tables[name] for name in ("chat_members", "messages", "message_reactions", "sessions")
)


async def messages_after(session: AsyncSession, cursors: Mapping[int, int], limit: int) -> list[Row[Any]]:
    """Up to ``limit`` messages past each chat's cursor (``chat id -> seq``), by chat and seq."""
    wanted = or_(
        *(and_(_messages.c.chat_id == chat_id, _messages.c.seq > seq) for chat_id, seq in cursors.items())
    )
    statement = select(_messages).where(wanted).order_by(_messages.c.chat_id, _messages.c.seq).limit(limit)
    return list((await session.execute(statement)).all())


async def changes_after(session: AsyncSession, cursors: Mapping[int, int], limit: int) -> list[Row[Any]]:
    """Up to ``limit`` messages changed past each chat's cursor (``chat id -> rev``), by chat and rev.

    New messages are changes too, so this one read finds both what is new and what was edited, deleted
    or reacted to.
    """
    wanted = or_(
        *(and_(_messages.c.chat_id == chat_id, _messages.c.rev > rev) for chat_id, rev in cursors.items())
    )
    statement = select(_messages).where(wanted).order_by(_messages.c.chat_id, _messages.c.rev).limit(limit)
    return list((await session.execute(statement)).all())


async def reactions_of(
    session: AsyncSession, seqs: Mapping[int, Collection[int]]
) -> dict[tuple[int, int], dict[str, list[int]]]:
    """``(chat id, seq) -> emoji -> people`` of these messages (``chat id -> seqs``), emoji in order of
    first use, people in the order they chose it.
    """
    found: dict[tuple[int, int], dict[str, list[int]]] = {}
    wanted = [
        and_(_reactions.c.chat_id == chat_id, _reactions.c.seq.in_(s)) for chat_id, s in seqs.items() if s
    ]
    if not wanted:
        return found
    statement = (
        select(_reactions.c.chat_id, _reactions.c.seq, _reactions.c.emoji, _reactions.c.user_id)
        .where(or_(*wanted))
        .order_by(_reactions.c.chat_id, _reactions.c.seq, _reactions.c.rev)
    )
    for chat_id, seq, emoji, user_id in await session.execute(statement):
        found.setdefault((chat_id, seq), {}).setdefault(emoji, []).append(user_id)
    return found


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
