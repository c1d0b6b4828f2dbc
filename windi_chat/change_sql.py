"""The SQL of changing stored messages: edits, deletes and reactions.

Each statement reads or writes the rows of one chat. A change takes the chat's next rev under the chat
row's lock, as a send does, so revs are handed out one at a time, in the order the changes commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Row,
    String,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.message_sql import all_read_seq
from windi_chat.models import metadata

__all__ = (
    "add_reaction",
    "chats_reacted_in",
    "clear_message",
    "edit_text",
    "lock_chat",
    "lock_message",
    "next_rev",
    "reaction_state",
    "take_reaction",
    "take_reactions_of",
)

_chats, _members, _messages, _reactions = (
    metadata.tables[name] for name in ("chats", "chat_members", "messages", "message_reactions")
)
# None is named like a column: SQLAlchemy would take such a parameter of an UPDATE as a value to write.
_chat = bindparam("chat", type_=BigInteger)
_person = bindparam("person", type_=BigInteger)
_seq = bindparam("message_seq", type_=BigInteger)
_rev = bindparam("new_rev", type_=BigInteger)
_emoji = bindparam("chosen", type_=String)
_this_message = (_messages.c.chat_id == _chat) & (_messages.c.seq == _seq)
_these_reactions = (_reactions.c.chat_id == _chat) & (_reactions.c.seq == _seq)

# The chat row is locked first, alone, and the member and the message are read by the statement after
# it, which takes a new snapshot: a statement that waited for the lock would see the other rows as they
# were before the lock's last holder committed. Every writer of those rows takes the chat row's lock.
_LOCK = select(_chats.c.id).where(_chats.c.id == _chat).with_for_update()
# SQLite has no row locks: a write first takes its database-wide write lock before anything is read.
_LOCK_SQLITE = update(_chats).where(_chats.c.id == _chat).values(last_rev=_chats.c.last_rev)
# The caller's role and the message (its columns null when the chat has no such seq), or no row when
# the caller is not a member.
_LOCKED_MESSAGE = (
    select(_members.c.role, _messages, all_read_seq)
    .select_from(_members)
    .outerjoin(_messages, (_messages.c.chat_id == _members.c.chat_id) & (_messages.c.seq == _seq))
    .where(_members.c.chat_id == _chat, _members.c.user_id == _person)
)
_NEXT_REV = (
    update(_chats)
    .where(_chats.c.id == _chat)
    .values(last_rev=_chats.c.last_rev + 1)
    .returning(_chats.c.last_rev)
)
_EDIT = (
    update(_messages)
    .where(_this_message)
    .values(
        text=bindparam("body", type_=Text),
        edited_at=bindparam("now", type_=_messages.c.edited_at.type),
        rev=_rev,
    )
)
# The text is overwritten, not hidden: a deleted message keeps only its place and what it answered.
_CLEAR = update(_messages).where(_this_message).values(text="", deleted=True, rev=_rev)
_TOUCH = update(_messages).where(_this_message).values(rev=_rev)
_DROP_REACTIONS = delete(_reactions).where(_these_reactions)
# How many different emoji the message carries, whether this emoji is among them, and whether it is
# the caller's already.
_REACTION_STATE = select(
    func.count(func.distinct(_reactions.c.emoji)),
    func.coalesce(func.max(case((_reactions.c.emoji == _emoji, 1), else_=0)), 0),
    func.coalesce(
        func.max(case(((_reactions.c.emoji == _emoji) & (_reactions.c.user_id == _person), 1), else_=0)), 0
    ),
).where(_these_reactions)
_ADD_REACTION = insert(_reactions).values(chat_id=_chat, seq=_seq, emoji=_emoji, user_id=_person, rev=_rev)
_TAKE_REACTION = delete(_reactions).where(
    _these_reactions, _reactions.c.emoji == _emoji, _reactions.c.user_id == _person
)


async def lock_chat(session: AsyncSession, chat_id: int) -> None:
    """Lock the chat row, as every writer of its messages and reactions does first."""
    postgres = session.get_bind().dialect.name == "postgresql"
    await session.execute(_LOCK if postgres else _LOCK_SQLITE, {"chat": chat_id})


async def lock_message(session: AsyncSession, chat_id: int, user_id: int, seq: int) -> Row[Any] | None:
    """Lock the chat for a change of one of its messages.

    The caller's ``role`` with the message's columns and the chat's ``all_read_seq`` (``id`` is None
    when the chat has no such seq), or None when the caller is not a member.
    """
    await lock_chat(session, chat_id)
    parameters = {"chat": chat_id, "person": user_id, "message_seq": seq}
    return (await session.execute(_LOCKED_MESSAGE, parameters)).one_or_none()


async def next_rev(session: AsyncSession, chat_id: int) -> int:
    """Take the chat's next rev (the chat row is locked already)."""
    return int((await session.execute(_NEXT_REV, {"chat": chat_id})).scalar_one())


async def edit_text(
    session: AsyncSession, chat_id: int, seq: int, text: str, now: datetime, rev: int
) -> None:
    parameters = {"chat": chat_id, "message_seq": seq, "body": text, "now": now, "new_rev": rev}
    await session.execute(_EDIT, parameters)


async def clear_message(session: AsyncSession, chat_id: int, seq: int, rev: int) -> None:
    """Delete a message's text and its reactions, leaving a tombstone under ``rev``."""
    parameters = {"chat": chat_id, "message_seq": seq, "new_rev": rev}
    await session.execute(_CLEAR, parameters)
    await session.execute(_DROP_REACTIONS, {"chat": chat_id, "message_seq": seq})


async def reaction_state(
    session: AsyncSession, chat_id: int, seq: int, user_id: int, emoji: str
) -> tuple[int, bool, bool]:
    """``(different emoji on the message, this emoji among them, the caller's already)``."""
    parameters = {"chat": chat_id, "message_seq": seq, "person": user_id, "chosen": emoji}
    kinds, present, mine = (await session.execute(_REACTION_STATE, parameters)).one()
    return int(kinds), bool(present), bool(mine)


async def add_reaction(
    session: AsyncSession, chat_id: int, seq: int, user_id: int, emoji: str, rev: int
) -> None:
    parameters = {"chat": chat_id, "message_seq": seq, "person": user_id, "chosen": emoji, "new_rev": rev}
    await session.execute(_ADD_REACTION, parameters)
    await session.execute(_TOUCH, {"chat": chat_id, "message_seq": seq, "new_rev": rev})


async def take_reaction(
    session: AsyncSession, chat_id: int, seq: int, user_id: int, emoji: str, rev: int
) -> None:
    """Take the caller's reaction back (``reaction_state`` said it is there)."""
    parameters = {"chat": chat_id, "message_seq": seq, "person": user_id, "chosen": emoji}
    await session.execute(_TAKE_REACTION, parameters)
    await session.execute(_TOUCH, {"chat": chat_id, "message_seq": seq, "new_rev": rev})


_CHATS_REACTED_IN = (
    select(_reactions.c.chat_id)
    .where(_reactions.c.user_id == _person)
    .distinct()
    .order_by(_reactions.c.chat_id)
)
_TAKE_REACTIONS_OF = (
    delete(_reactions)
    .where(_reactions.c.chat_id == _chat, _reactions.c.user_id == _person)
    .returning(_reactions.c.seq)
)
_MESSAGE = select(_messages, all_read_seq).where(_this_message)


async def chats_reacted_in(session: AsyncSession, user_id: int) -> list[int]:
    return list((await session.scalars(_CHATS_REACTED_IN, {"person": user_id})).all())


async def take_reactions_of(session: AsyncSession, chat_id: int, user_id: int) -> list[Row[Any]]:
    """Take back all of a person's reactions in one chat (its row locked), each changed message under a
    rev of its own: the messages as they are now, ascending by seq."""
    parameters = {"chat": chat_id, "person": user_id}
    seqs = sorted(set((await session.scalars(_TAKE_REACTIONS_OF, parameters)).all()))
    changed = []
    for seq in seqs:
        rev = await next_rev(session, chat_id)
        await session.execute(_TOUCH, {"chat": chat_id, "message_seq": seq, "new_rev": rev})
        changed.append((await session.execute(_MESSAGE, {"chat": chat_id, "message_seq": seq})).one())
    return changed
