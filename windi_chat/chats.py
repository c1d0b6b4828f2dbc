"""Chats, groups and membership: who may see and change what.

A user sees only the chats they belong to; a chat that does not exist and a chat the caller is not in
answer the same 404, so chat ids cannot be probed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_409_CONFLICT
from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from windi_chat.events import EventBus
from windi_chat.messaging import message_out
from windi_chat.models import (
    CHAT_GROUP,
    CHAT_PRIVATE,
    ROLE_MEMBER,
    ROLE_OWNER,
    Chat,
    ChatMember,
    Message,
    User,
)
from windi_chat.schemas import (
    ChatOut,
    GroupChatCreate,
    MemberOut,
    PrivateChatCreate,
)
from windi_chat.security import CurrentUser

__all__ = ("ChatController", "ChatService", "GroupController")

logger = logging.getLogger("windi_chat.chats")


class ChatNotFoundError(NotFoundException):
    detail = "Chat not found"


class UserNotFoundError(NotFoundException):
    detail = "User not found"


class MembershipConflictError(ClientException):
    status_code = HTTP_409_CONFLICT


class ChatService(SQLAlchemyAsyncRepositoryService[Chat]):
    """Creating chats, reading them as one member sees them, and changing group membership."""

    class Repo(SQLAlchemyAsyncRepository[Chat]):
        model_type = Chat

    repository_type = Repo

    @property
    def session(self) -> Any:
        return self.repository.session

    # Reading -------------------------------------------------------------------------------------

    async def views(self, viewer_id: int, chat_id: int | None = None) -> list[ChatOut]:
        """The viewer's chats (or one of them), most recent activity first, in two queries.

        One query reads the chats with the viewer's marker and each chat's last message; the other
        reads every member of those chats, which also gives each chat's lowest read marker.
        """
        mine = aliased(ChatMember)
        last = aliased(Message)
        statement = (
            select(Chat, mine.read_seq, last)
            .join(mine, and_(mine.chat_id == Chat.id, mine.user_id == viewer_id))
            .outerjoin(last, and_(last.chat_id == Chat.id, last.seq == Chat.last_seq))
            .order_by(Chat.last_activity_at.desc(), Chat.id.desc())
        )
        members_of = select(mine.chat_id).where(mine.user_id == viewer_id)
        if chat_id is not None:
            statement = statement.where(Chat.id == chat_id)
            members_of = members_of.where(mine.chat_id == chat_id)
        rows = (await self.session.execute(statement)).all()
        if not rows:
            return []
        member_rows = (
            await self.session.execute(_members_with_names().where(ChatMember.chat_id.in_(members_of)))
        ).all()
        members: dict[int, list[tuple[ChatMember, str]]] = defaultdict(list)
        for member, name in member_rows:
            members[member.chat_id].append((member, name))
        return [
            _chat_out(chat, viewer_id, my_read_seq, last_message, members[chat.id])
            for chat, my_read_seq, last_message in rows
        ]

    async def view(self, viewer_id: int, chat_id: int) -> ChatOut:
        views = await self.views(viewer_id, chat_id)
        if not views:
            raise ChatNotFoundError
        return views[0]

    # Creating ------------------------------------------------------------------------------------

    async def open_private(self, caller_id: int, other_id: int) -> tuple[ChatOut, bool]:
        """The one private chat of the pair: (chat, created). The unique pair key settles races."""
        if other_id == caller_id:
            raise ClientException("A private chat needs another person")
        if await self.session.get(User, other_id) is None:
            raise UserNotFoundError
        key = f"{min(caller_id, other_id)}:{max(caller_id, other_id)}"
        existing = await self.session.scalar(select(Chat.id).where(Chat.private_key == key))
        if existing is not None:
            return await self.view(caller_id, existing), False
        chat = Chat(type=CHAT_PRIVATE, creator_id=caller_id, private_key=key)
        self.session.add(chat)
        try:
            await self.session.flush()
            self.session.add_all(
                [ChatMember(chat_id=chat.id, user_id=uid, role=ROLE_MEMBER) for uid in (caller_id, other_id)]
            )
            await self.session.commit()
        except IntegrityError:
            # The other person opened the same chat at the same moment: theirs is the one.
            await self.session.rollback()
            existing = await self.session.scalar(select(Chat.id).where(Chat.private_key == key))
            if existing is None:
                raise
            return await self.view(caller_id, existing), False
        logger.info("Private chat created: chat_id=%s user_ids=%s,%s", chat.id, caller_id, other_id)
        return await self.view(caller_id, chat.id), True

    async def create_group(self, caller_id: int, data: GroupChatCreate) -> ChatOut:
        member_ids = sorted(set(data.member_ids) - {caller_id})
        await self._require_users(member_ids)
        chat = Chat(type=CHAT_GROUP, name=data.name.strip(), creator_id=caller_id)
        self.session.add(chat)
        await self.session.flush()
        self.session.add(ChatMember(chat_id=chat.id, user_id=caller_id, role=ROLE_OWNER))
        self.session.add_all(
            [ChatMember(chat_id=chat.id, user_id=uid, role=ROLE_MEMBER) for uid in member_ids]
        )
        await self.session.commit()
        logger.info(
            "Group created: chat_id=%s owner_id=%s members=%d", chat.id, caller_id, len(member_ids) + 1
        )
        return await self.view(caller_id, chat.id)

    async def _require_users(self, user_ids: Sequence[int]) -> None:
        if not user_ids:
            return
        found = set((await self.session.scalars(select(User.id).where(User.id.in_(user_ids)))).all())
        missing = [uid for uid in user_ids if uid not in found]
        if missing:
            raise NotFoundException(f"Unknown user ids: {missing}")

    # Membership ----------------------------------------------------------------------------------

    async def _group_for_change(self, group_id: int, caller_id: int) -> tuple[Chat, ChatMember]:
        """Lock the group row (so membership changes of one group run one at a time) and the caller's row."""
        chat = await self.session.scalar(select(Chat).where(Chat.id == group_id).with_for_update())
        caller = await self.session.get(ChatMember, (group_id, caller_id))
        if chat is None or chat.type != CHAT_GROUP or caller is None:
            raise ChatNotFoundError
        return chat, caller

    async def add_member(self, group_id: int, caller_id: int, user_id: int, events: EventBus) -> ChatOut:
        """The owner adds someone; they start with everything so far marked as read."""
        chat, caller = await self._group_for_change(group_id, caller_id)
        if caller.role != ROLE_OWNER:
            raise PermissionDeniedException("Only the group's owner can add members")
        if await self.session.get(User, user_id) is None:
            raise UserNotFoundError
        if await self.session.get(ChatMember, (group_id, user_id)) is not None:
            raise MembershipConflictError(f"User {user_id} is already a member of this group")
        self.session.add(
            ChatMember(chat_id=group_id, user_id=user_id, role=ROLE_MEMBER, read_seq=chat.last_seq)
        )
        try:
            await self.session.commit()
        except (IntegrityError, RepositoryIntegrityError) as exc:  # added twice at the same moment
            await self.session.rollback()
            raise MembershipConflictError(f"User {user_id} is already a member of this group") from exc
        logger.info("Member added: chat_id=%s user_id=%s by=%s", group_id, user_id, caller_id)
        events.member_added(group_id, user_id)
        return await self._snapshot(group_id, caller_id)

    async def remove_member(self, group_id: int, caller_id: int, user_id: int, events: EventBus) -> ChatOut:
        """The owner removes anyone; anyone removes themselves. An owner who leaves hands over the group."""
        _chat, caller = await self._group_for_change(group_id, caller_id)
        if user_id != caller_id and caller.role != ROLE_OWNER:
            raise PermissionDeniedException("Only the group's owner can remove other members")
        target = caller if user_id == caller_id else await self.session.get(ChatMember, (group_id, user_id))
        if target is None:
            raise MembershipConflictError(f"User {user_id} is not a member of this group")
        new_owner_id = None
        if target.role == ROLE_OWNER:
            successor = await self.session.scalar(
                select(ChatMember)
                .where(ChatMember.chat_id == group_id, ChatMember.user_id != user_id)
                .order_by(ChatMember.joined_at, ChatMember.user_id)
                .limit(1)
            )
            if successor is not None:
                successor.role = ROLE_OWNER
                new_owner_id = successor.user_id
        await self.session.delete(target)
        await self.session.commit()
        logger.info(
            "Member removed: chat_id=%s user_id=%s by=%s%s",
            group_id,
            user_id,
            caller_id,
            f" new_owner_id={new_owner_id}" if new_owner_id else "",
        )
        events.member_removed(group_id, user_id)
        return await self._snapshot(group_id, caller_id)

    async def _snapshot(self, chat_id: int, caller_id: int) -> ChatOut:
        """The chat after a change, also for a caller who just left it (seen without their own marker)."""
        views = await self.views(caller_id, chat_id)
        if views:
            return views[0]
        chat = await self.session.get(Chat, chat_id)
        last = await self.session.scalar(
            select(Message).where(Message.chat_id == chat_id, Message.seq == chat.last_seq)
        )
        rows = (await self.session.execute(_members_with_names().where(ChatMember.chat_id == chat_id))).all()
        return _chat_out(chat, caller_id, chat.last_seq, last, [(m, n) for m, n in rows])


def _members_with_names() -> Any:
    """Members with their names, in the order a chat lists them: by chat, then who joined first."""
    return (
        select(ChatMember, User.name)
        .join(User, User.id == ChatMember.user_id)
        .order_by(ChatMember.chat_id, ChatMember.joined_at, ChatMember.user_id)
    )


def _chat_out(
    chat: Chat, viewer_id: int, my_read_seq: int, last: Message | None, members: list[tuple[ChatMember, str]]
) -> ChatOut:
    all_read_seq = min((m.read_seq for m, _ in members), default=chat.last_seq)
    name = chat.name
    if chat.type == CHAT_PRIVATE:
        name = next((n for m, n in members if m.user_id != viewer_id), None)
    return ChatOut(
        id=chat.id,
        type=chat.type,  # type: ignore[arg-type]
        name=name,
        created_at=chat.created_at,
        creator_id=chat.creator_id,
        members=[
            MemberOut(user_id=m.user_id, name=n, role=m.role, joined_at=m.joined_at) for m, n in members
        ],  # type: ignore[arg-type]
        last_message=message_out(last, all_read_seq) if last is not None else None,
        unread_count=max(0, chat.last_seq - my_read_seq),
    )


ChatCreate = PrivateChatCreate | GroupChatCreate


class ChatController(Controller):
    path = "/chats"
    tags = ["chats"]

    @post(
        "/",
        operation_id="createChat",
        summary="Start a private chat or create a group",
        status_code=HTTP_201_CREATED,
        raises=[NotFoundException, ClientException],
    )
    async def create(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[ChatCreate],
        chats: NamedDependency[ChatService],
    ) -> Response[ChatOut]:
        """201 with the new chat. A private chat the two already share comes back as 200, whoever made it.

        A private chat with yourself is 400; unknown users are 404. Group members listed twice count once.
        """
        if isinstance(data, PrivateChatCreate):
            chat, created = await chats.open_private(request.user.id, data.user_id)
            return Response(chat, status_code=HTTP_201_CREATED if created else HTTP_200_OK)
        return Response(await chats.create_group(request.user.id, data), status_code=HTTP_201_CREATED)

    @get("/", operation_id="listChats", summary="The caller's chats, most recent activity first")
    async def inbox(
        self, request: Request[CurrentUser, Any, Any], chats: NamedDependency[ChatService]
    ) -> list[ChatOut]:
        """Each chat with its last message (or null) and the caller's unread count."""
        return await chats.views(request.user.id)

    @get(
        "/{chat_id:int}",
        operation_id="getChat",
        summary="One of the caller's chats",
        raises=[ChatNotFoundError],
    )
    async def get_chat(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: FromPath[int],
        chats: NamedDependency[ChatService],
    ) -> ChatOut:
        """404 both for a chat that does not exist and for one the caller is not in."""
        return await chats.view(request.user.id, chat_id)


class GroupController(Controller):
    """The group endpoints, kept exactly as clients already call them."""

    path = "/groups"
    tags = ["chats"]

    @post(
        "/{group_id:int}/add_user/{user_id:int}",
        operation_id="addGroupMember",
        summary="Add a member (owner only)",
        status_code=HTTP_200_OK,
        raises=[ChatNotFoundError, PermissionDeniedException, MembershipConflictError],
    )
    async def add_user(
        self,
        request: Request[CurrentUser, Any, Any],
        group_id: FromPath[int],
        user_id: FromPath[int],
        chats: NamedDependency[ChatService],
        events: NamedDependency[EventBus],
    ) -> ChatOut:
        """403 for a member who is not the owner; 404 for a group the caller is not in or an unknown user;
        409 for someone already in. The new member sees the whole history, with nothing unread.
        """
        return await chats.add_member(group_id, request.user.id, user_id, events)

    @post(
        "/{group_id:int}/remove_user/{user_id:int}",
        operation_id="removeGroupMember",
        summary="Remove a member, or leave",
        status_code=HTTP_200_OK,
        raises=[ChatNotFoundError, PermissionDeniedException, MembershipConflictError],
    )
    async def remove_user(
        self,
        request: Request[CurrentUser, Any, Any],
        group_id: FromPath[int],
        user_id: FromPath[int],
        chats: NamedDependency[ChatService],
        events: NamedDependency[EventBus],
    ) -> ChatOut:
        """The owner removes anyone; any member removes themselves (leaves). 403 for a member removing
        someone else; 409 for someone not in the group. When the owner leaves, the longest-standing member
        becomes owner; the last member leaving leaves the group empty, with its history kept.
        """
        return await chats.remove_member(group_id, request.user.id, user_id, events)
