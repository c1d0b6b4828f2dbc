"""Chats, groups and membership: who may see and change what.

A user sees only the chats they belong to; a chat that does not exist and a chat the caller is not in
answer the same :class:`ChatNotFoundError`, so chat ids cannot be probed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session

from windi_chat.chat_views import (
    INBOX_MEMBERS,
    OnlineCheck,
    chat_out,
    chat_views,
    inbox_page,
    members_of,
    nobody_online,
)
from windi_chat.errors import (
    AlreadyMemberError,
    ChatNotFoundError,
    GroupFullError,
    InvalidError,
    NotAllowedError,
    NotAMemberError,
    UserNotFoundError,
)
from windi_chat.events import EventBus
from windi_chat.inbox import InboxCursor
from windi_chat.models import Chat, ChatMember, ChatType, MemberRole, Message, User
from windi_chat.schemas import ChatOut, GroupChatCreate

__all__ = ("ChatService",)

logger = logging.getLogger("windi_chat.chats")


class MemberRepository(SQLAlchemyAsyncRepository[ChatMember]):
    model_type = ChatMember


class ChatService(SQLAlchemyAsyncRepositoryService[Chat]):
    """Creating chats, reading them as one member sees them, and changing group membership."""

    class Repo(SQLAlchemyAsyncRepository[Chat]):
        model_type = Chat

    repository_type = Repo

    def __init__(self, session: AsyncSession | async_scoped_session[AsyncSession], **kwargs: Any) -> None:
        super().__init__(session=session, **kwargs)
        self.members = MemberRepository(session=session)
        # Who is online lives in memory (``Presence.is_online``); the app sets it for each request.
        self.online: OnlineCheck = nobody_online

    @property
    def session(self) -> AsyncSession:
        return cast("AsyncSession", self.repository.session)

    # Reading -------------------------------------------------------------------------------------

    async def views(self, viewer_id: int, chat_id: int | None = None) -> list[ChatOut]:
        """The viewer's chats (or one of them), each with every member."""
        return [view for _, view in await chat_views(self.session, viewer_id, chat_id, online=self.online)]

    async def inbox(
        self, viewer_id: int, limit: int, before: InboxCursor | None
    ) -> tuple[list[ChatOut], InboxCursor | None]:
        """A page of the viewer's chats, and the cursor of the next page when there is one."""
        return await inbox_page(self.session, viewer_id, limit, before, self.online)

    async def view(self, viewer_id: int, chat_id: int) -> ChatOut:
        views = await self.views(viewer_id, chat_id)
        if not views:
            raise ChatNotFoundError
        return views[0]

    async def _announce(
        self, events: EventBus, chat_id: int, user_ids: Sequence[int], same_view: bool
    ) -> None:
        """Queue ``chat_added`` for these new members, each with the chat's inbox entry as they see it.

        Read inside the transaction that adds them, so the entry is the state the commit makes. The
        members of a group see one entry (``same_view``): it is read once, however many they are.
        """
        viewers = user_ids[:1] if same_view else user_ids
        for viewer_id in viewers:
            [(_, entry)] = await chat_views(
                self.session, viewer_id, chat_id, member_limit=INBOX_MEMBERS, online=self.online
            )
            events.chat_added(self.session, user_ids if same_view else [viewer_id], entry)

    # Creating ------------------------------------------------------------------------------------

    async def open_private(self, caller_id: int, other_id: int, events: EventBus) -> tuple[ChatOut, bool]:
        """The one private chat of the pair: (chat, created). The unique pair key settles races.

        A new chat is announced to both people's gateways once it commits.
        """
        if other_id == caller_id:
            raise InvalidError("A private chat needs another person")
        await self._require_users([other_id])
        key = f"{min(caller_id, other_id)}:{max(caller_id, other_id)}"
        existing = await self.get_one_or_none(private_key=key)
        if existing is not None:
            return await self.view(caller_id, existing.id), False
        try:
            chat = await self.repository.add(
                Chat(type=ChatType.PRIVATE, creator_id=caller_id, private_key=key), auto_refresh=False
            )
            await self.members.add_many(
                [
                    ChatMember(chat_id=chat.id, user_id=uid, role=MemberRole.MEMBER)
                    for uid in (caller_id, other_id)
                ],
                auto_commit=False,
            )
            await self._announce(events, chat.id, [caller_id, other_id], same_view=False)
            await self.session.commit()
        except IntegrityError:
            # The other person opened the same chat at the same moment: theirs is the one.
            await self.session.rollback()
            existing = await self.get_one_or_none(private_key=key)
            if existing is None:
                raise
            return await self.view(caller_id, existing.id), False
        logger.info("Private chat created: chat_id=%s user_ids=%s,%s", chat.id, caller_id, other_id)
        return await self.view(caller_id, chat.id), True

    async def create_group(
        self, caller_id: int, data: GroupChatCreate, max_members: int, events: EventBus
    ) -> ChatOut:
        """A group of the caller (its owner) and ``data.member_ids``, at most ``max_members`` in all.

        It is announced to every member's gateways, the owner's included, once it commits.
        """
        member_ids = sorted(set(data.member_ids) - {caller_id})
        if len(member_ids) + 1 > max_members:
            raise GroupFullError
        await self._require_users(member_ids)
        chat = await self.repository.add(
            Chat(type=ChatType.GROUP, name=data.name.strip(), creator_id=caller_id), auto_refresh=False
        )
        await self.members.add_many(
            [ChatMember(chat_id=chat.id, user_id=caller_id, role=MemberRole.OWNER)]
            + [ChatMember(chat_id=chat.id, user_id=uid, role=MemberRole.MEMBER) for uid in member_ids],
            auto_commit=False,
        )
        await self._announce(events, chat.id, [caller_id, *member_ids], same_view=True)
        await self.session.commit()
        logger.info(
            "Group created: chat_id=%s owner_id=%s members=%d", chat.id, caller_id, len(member_ids) + 1
        )
        return await self.view(caller_id, chat.id)

    async def _require_users(self, user_ids: Sequence[int]) -> None:
        if not user_ids:
            return
        found = set(await self.session.scalars(select(User.id).where(User.id.in_(user_ids))))
        missing = [uid for uid in user_ids if uid not in found]
        if missing:
            raise UserNotFoundError(None if len(user_ids) == 1 else f"Unknown user ids: {missing}")

    # Membership ----------------------------------------------------------------------------------

    async def _group_for_change(self, group_id: int, caller_id: int) -> tuple[Chat, ChatMember]:
        """Lock the group row (so membership changes of one group run one at a time) and the caller's row."""
        if self.session.bind is not None and self.session.bind.dialect.name == "sqlite":
            # SQLite has no row locks: a write first takes its database-wide write lock, so concurrent
            # changes run one after another there too (and the member cap holds).
            await self.session.execute(update(Chat).where(Chat.id == group_id).values(last_seq=Chat.last_seq))
        chat = await self.get_one_or_none(Chat.id == group_id, with_for_update=True)
        caller = await self.members.get_one_or_none(chat_id=group_id, user_id=caller_id)
        if chat is None or chat.type != ChatType.GROUP or caller is None:
            raise ChatNotFoundError
        return chat, caller

    async def add_member(
        self, group_id: int, caller_id: int, user_id: int, events: EventBus, max_members: int
    ) -> ChatOut:
        """The owner adds someone; they start with everything so far marked as read.

        The group's row lock (``_group_for_change``) makes concurrent adds count one after another, so
        the cap of ``max_members`` holds exactly.
        """
        chat, caller = await self._group_for_change(group_id, caller_id)
        if caller.role != MemberRole.OWNER:
            raise NotAllowedError("Only the group's owner can add members")
        await self._require_users([user_id])
        already = AlreadyMemberError(f"User {user_id} is already a member of this group")
        if await self.members.exists(chat_id=group_id, user_id=user_id):
            raise already
        if await self._member_count(group_id) >= max_members:
            raise GroupFullError
        events.member_added(self.session, group_id, user_id)
        member = ChatMember(chat_id=group_id, user_id=user_id, role=MemberRole.MEMBER, read_seq=chat.last_seq)
        try:
            await self.members.add(member, auto_commit=False, auto_refresh=False)
        except IntegrityError as exc:  # added twice at the same moment
            await self.session.rollback()
            raise already from exc
        await self._announce(events, group_id, [user_id], same_view=True)
        await self.session.commit()
        logger.info("Member added: chat_id=%s user_id=%s by=%s", group_id, user_id, caller_id)
        return await self._snapshot(group_id, caller_id)

    async def _member_count(self, chat_id: int) -> int:
        count = await self.session.scalar(
            select(func.count()).select_from(ChatMember).where(ChatMember.chat_id == chat_id)
        )
        return count or 0

    async def remove_member(self, group_id: int, caller_id: int, user_id: int, events: EventBus) -> ChatOut:
        """The owner removes anyone; anyone removes themselves. An owner who leaves hands over the group."""
        _chat, caller = await self._group_for_change(group_id, caller_id)
        if user_id != caller_id and caller.role != MemberRole.OWNER:
            raise NotAllowedError("Only the group's owner can remove other members")
        target = (
            caller
            if user_id == caller_id
            else await self.members.get_one_or_none(chat_id=group_id, user_id=user_id)
        )
        if target is None:
            raise NotAMemberError(f"User {user_id} is not a member of this group")
        new_owner_id = None
        if target.role == MemberRole.OWNER:
            successor = await self.session.scalar(
                select(ChatMember)
                .where(ChatMember.chat_id == group_id, ChatMember.user_id != user_id)
                .order_by(ChatMember.joined_at, ChatMember.user_id)
                .limit(1)
            )
            if successor is not None:
                successor.role = MemberRole.OWNER
                new_owner_id = successor.user_id
        events.member_removed(self.session, group_id, user_id)
        await self.session.delete(target)
        await self.session.commit()
        logger.info(
            "Member removed: chat_id=%s user_id=%s by=%s%s",
            group_id,
            user_id,
            caller_id,
            f" new_owner_id={new_owner_id}" if new_owner_id else "",
        )
        return await self._snapshot(group_id, caller_id)

    async def _snapshot(self, chat_id: int, caller_id: int) -> ChatOut:
        """The chat after a change, also for a caller who just left it (seen without their own marker)."""
        views = await self.views(caller_id, chat_id)
        if views:
            return views[0]
        chat = await self.get(chat_id)
        last = await self.session.scalar(
            select(Message).where(Message.chat_id == chat_id, Message.seq == chat.last_seq)
        )
        members = await members_of(self.session, [chat_id], None)
        return chat_out(chat, caller_id, chat.last_seq, last, *members[chat_id], online=self.online)
