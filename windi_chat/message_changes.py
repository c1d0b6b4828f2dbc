"""Changing a stored message: edit, delete, react. Every rule about changing messages lives here.

Each action is one transaction: it locks the chat row (as sends do), takes the chat's next rev for the
change, commits, and the message's whole new state goes out as ``message_updated`` on the commit. A
change that changes nothing (the same text, a reaction already there or already gone, a second delete)
takes no rev, publishes nothing, and answers with the message as it is.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat import change_sql
from windi_chat.errors import (
    ChatNotFoundError,
    InvalidReactionError,
    MessageDeletedError,
    MessageNotFoundError,
    NotYourMessageError,
    TooManyReactionsError,
)
from windi_chat.events import EventBus
from windi_chat.inputs import emoji_problem
from windi_chat.messaging import clean_text, messages_out
from windi_chat.models import MemberRole, utcnow
from windi_chat.schemas import MessageOut

__all__ = (
    "CHANGES_LIMITED",
    "chats_reacted_in",
    "clean_emoji",
    "delete_message",
    "edit_message",
    "react",
    "take_back_reactions",
)

logger = logging.getLogger("windi_chat.messaging")

# Edits, deletes and reactions draw on the person's send allowance (``WINDI_SEND_RATE``), so that
# changing messages cannot flood a chat where sending could not.
CHANGES_LIMITED = "Too many messages and changes; slow down"


def clean_emoji(emoji: str) -> str:
    if problem := emoji_problem(emoji):
        raise InvalidReactionError(problem)
    return emoji


@asynccontextmanager
async def _changing(session: AsyncSession) -> AsyncIterator[None]:
    """A refused change lets go of the chat row's lock at once (a cancelled one, when its session closes)."""
    try:
        yield
    except Exception:
        await session.rollback()
        raise


async def _locked_message(
    session: AsyncSession, chat_id: int, user_id: int, seq: int
) -> tuple[str, Row[Any]]:
    """Lock the chat and read the message: the caller's role and the row, or the error that says why not."""
    row = await change_sql.lock_message(session, chat_id, user_id, seq)
    if row is None:
        raise ChatNotFoundError
    if row.id is None:
        raise MessageNotFoundError
    return row.role, row


async def _as_it_is(session: AsyncSession, chat_id: int, row: Row[Any]) -> MessageOut:
    """A change that changed nothing: the message as stored, and the lock let go."""
    [message] = await messages_out(session, chat_id, [row])
    await session.commit()
    return message


async def _changed(session: AsyncSession, events: EventBus, row: Row[Any], **changes: Any) -> MessageOut:
    """The locked row with what the change wrote, announced on the commit; then commit.

    Built from the row already read rather than read again: the chat row's lock is held until the
    commit, and every round trip under it holds up the chat's other writers.
    """
    changed = SimpleNamespace(**{**row._mapping, **changes})
    [message] = await messages_out(session, row.chat_id, [changed])
    events.message_updated(session, message)
    await session.commit()
    logger.debug("Message changed: chat_id=%s seq=%s rev=%s", row.chat_id, row.seq, message.rev)
    return message


async def chats_reacted_in(session: AsyncSession, user_id: int) -> list[int]:
    """The chats where the person has reactions, members or not any more."""
    return await change_sql.chats_reacted_in(session, user_id)


async def take_back_reactions(session: AsyncSession, events: EventBus, chat_id: int, user_id: int) -> None:
    """Take back every reaction of a person whose account goes in one chat, each changed message under a
    rev and announced on the commit, so that clients that follow the change feed see them go (the caller
    commits)."""
    await change_sql.lock_chat(session, chat_id)
    rows = await change_sql.take_reactions_of(session, chat_id, user_id)
    for message in await messages_out(session, chat_id, rows):
        events.message_updated(session, message)


async def edit_message(
    session: AsyncSession, events: EventBus, chat_id: int, user_id: int, seq: int, text: str
) -> MessageOut:
    """Give one of the caller's own messages a new text, under the rules of sending."""
    text = clean_text(text)
    async with _changing(session):
        _role, row = await _locked_message(session, chat_id, user_id, seq)
        if row.sender_id != user_id:
            raise NotYourMessageError("Only the sender may edit a message")
        if row.deleted:
            raise MessageDeletedError
        if row.text == text:
            return await _as_it_is(session, chat_id, row)
        rev, now = await change_sql.next_rev(session, chat_id), utcnow()
        await change_sql.edit_text(session, chat_id, seq, text, now, rev)
        return await _changed(session, events, row, text=text, edited_at=now, rev=rev)


async def delete_message(
    session: AsyncSession, events: EventBus, chat_id: int, user_id: int, seq: int
) -> MessageOut:
    """Delete a message for everyone: its sender may, and so may a group's owner.

    The text and the reactions are gone from the database; the message keeps its seq and ``reply_to``.
    """
    async with _changing(session):
        role, row = await _locked_message(session, chat_id, user_id, seq)
        if row.sender_id != user_id and role != MemberRole.OWNER:
            raise NotYourMessageError("Only the sender or the group's owner may delete a message")
        if row.deleted:
            return await _as_it_is(session, chat_id, row)
        rev = await change_sql.next_rev(session, chat_id)
        await change_sql.clear_message(session, chat_id, seq, rev)
        return await _changed(session, events, row, text="", deleted=True, rev=rev)


async def react(
    session: AsyncSession,
    events: EventBus,
    chat_id: int,
    user_id: int,
    seq: int,
    emoji: str,
    *,
    on: bool,
    max_reactions: int,
) -> MessageOut:
    """Add (``on``) or take back the caller's ``emoji`` on a message.

    A message carries at most ``max_reactions`` different emoji: a new one past that is refused, while
    more people may still choose one it has. A deleted message takes no new reaction.
    """
    emoji = clean_emoji(emoji)
    async with _changing(session):
        _role, row = await _locked_message(session, chat_id, user_id, seq)
        kinds, present, mine = await change_sql.reaction_state(session, chat_id, seq, user_id, emoji)
        if on and row.deleted:
            raise MessageDeletedError
        if mine == on:
            return await _as_it_is(session, chat_id, row)
        if on and not present and kinds >= max_reactions:
            raise TooManyReactionsError(f"A message carries at most {max_reactions} different emoji")
        rev = await change_sql.next_rev(session, chat_id)
        if on:
            await change_sql.add_reaction(session, chat_id, seq, user_id, emoji, rev)
        else:
            await change_sql.take_reaction(session, chat_id, seq, user_id, emoji, rev)
        return await _changed(session, events, row, rev=rev)
