"""Chats, groups and membership over REST, through ``ChatService``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from windi_chat.chats import ChatService
from windi_chat.errors import (
    AlreadyMemberError,
    ChatNotFoundError,
    InvalidError,
    NotAllowedError,
    NotAMemberError,
    UserNotFoundError,
)
from windi_chat.events import EventBus
from windi_chat.http_errors import error_responses
from windi_chat.inputs import PathId
from windi_chat.schemas import ChatOut, GroupChatCreate, PrivateChatCreate
from windi_chat.security import CurrentUser

__all__ = ("ChatController", "GroupController")

ChatCreate = PrivateChatCreate | GroupChatCreate


class ChatController(Controller):
    path = "/chats"
    tags = ["chats"]

    @post(
        "/",
        operation_id="createChat",
        summary="Start a private chat or create a group",
        status_code=HTTP_201_CREATED,
        responses=error_responses(InvalidError, UserNotFoundError),
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
        responses=error_responses(ChatNotFoundError),
    )
    async def get_chat(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
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
        responses=error_responses(ChatNotFoundError, UserNotFoundError, NotAllowedError, AlreadyMemberError),
    )
    async def add_user(
        self,
        request: Request[CurrentUser, Any, Any],
        group_id: PathId,
        user_id: PathId,
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
        responses=error_responses(ChatNotFoundError, NotAllowedError, NotAMemberError),
    )
    async def remove_user(
        self,
        request: Request[CurrentUser, Any, Any],
        group_id: PathId,
        user_id: PathId,
        chats: NamedDependency[ChatService],
        events: NamedDependency[EventBus],
    ) -> ChatOut:
        """The owner removes anyone; any member removes themselves (leaves). 403 for a member removing
        someone else; 409 for someone not in the group. When the owner leaves, the longest-standing member
        becomes owner; the last member leaving leaves the group empty, with its history kept.
        """
        return await chats.remove_member(group_id, request.user.id, user_id, events)
