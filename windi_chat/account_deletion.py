"""Deleting an account: the person leaves, their messages stay for the others without a name.

One action serves ``DELETE /users/me`` and ``windi-chat users delete``. In one transaction the account
leaves every chat (a group's ownership passes as when an owner leaves), its reactions are taken back
(each a change with its rev, as if the person had taken it back), its messages lose their sender
(``sender_id`` null, shown as "Deleted account"), and the user row goes with its sessions and refresh
tokens, so no email, name or password hash remains and the email can be registered again. The events
go out on the commit: every process closes the account's sockets and tells the chats it left.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.errors import UserNotFoundError
from windi_chat.events import EventBus
from windi_chat.login_attempts import LoginAttempts
from windi_chat.message_changes import chats_reacted_in, take_back_reactions
from windi_chat.models import Chat, ChatMember, ChatType, LoginSession, MemberRole, Message, User
from windi_chat.security import PasswordHasher
from windi_chat.sessions import prove_password

__all__ = ("delete_account", "delete_account_with_password")

logger = logging.getLogger("windi_chat.accounts")


async def delete_account(db: AsyncSession, events: EventBus, user_id: int) -> None:
    """Delete the account and commit; :class:`UserNotFoundError` if there is none."""
    user = await db.get(User, user_id, with_for_update=True)
    if user is None:
        raise UserNotFoundError
    memberships = {
        member.chat_id: member
        for member in await db.scalars(select(ChatMember).where(ChatMember.user_id == user_id))
    }
    reacted = set(await chats_reacted_in(db, user_id))
    # One pass in chat id order, each chat row locked once in that order, as two deletions at once
    # must lock them; the reactions go while the person is still a member, so that each chat is told.
    for chat_id in sorted(memberships.keys() | reacted):
        if chat_id in reacted:
            await take_back_reactions(db, events, chat_id, user_id)
        if chat_id in memberships:
            await _leave(db, events, memberships[chat_id])
    session_ids = list(await db.scalars(select(LoginSession.id).where(LoginSession.user_id == user_id)))
    if session_ids:
        events.sessions_revoked(db, session_ids)
    # Explicit rather than left to the foreign key, so that it holds whatever the database enforces.
    await db.execute(update(Message).where(Message.sender_id == user_id).values(sender_id=None))
    await db.delete(user)  # its sessions and refresh tokens go with it (ON DELETE CASCADE)
    await db.commit()
    logger.info("Account deleted: user_id=%s (left %d chats)", user_id, len(memberships))


async def _leave(db: AsyncSession, events: EventBus, member: ChatMember) -> None:
    """Leave one chat, as :meth:`ChatService.remove_member` does: under the chat row's lock.

    A private chat's pair key is cleared: the pair is gone, and SQLite may give the account's id to
    the next registration, whose private chat with the same person must be a new one.
    """
    chat = await db.get_one(Chat, member.chat_id, with_for_update=True)
    if chat.type == ChatType.PRIVATE:
        chat.private_key = None
    if member.role == MemberRole.OWNER:
        successor = await db.scalar(
            select(ChatMember)
            .where(ChatMember.chat_id == member.chat_id, ChatMember.user_id != member.user_id)
            .order_by(ChatMember.joined_at, ChatMember.user_id)
            .limit(1)
        )
        if successor is not None:
            successor.role = MemberRole.OWNER
            logger.info(
                "Group ownership passed: chat_id=%s new_owner_id=%s", member.chat_id, successor.user_id
            )
    events.member_removed(db, member.chat_id, member.user_id)
    await db.delete(member)


async def delete_account_with_password(
    db: AsyncSession,
    events: EventBus,
    check: tuple[PasswordHasher, LoginAttempts],
    user_id: int,
    password: str,
) -> None:
    """The person proves it is them with their password first; a wrong one is :class:`WrongPasswordError`,
    and counts towards the account's login lock.
    """
    await prove_password(db, check, user_id, password)
    await delete_account(db, events, user_id)
