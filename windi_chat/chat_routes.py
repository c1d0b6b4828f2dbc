"""Chats, groups and membership over REST, through ``ChatService``."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from windi_chat.chats import ChatService
from windi_chat.config import Settings
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
from windi_chat.http_errors import error_responses
from windi_chat.inbox import InboxCursor
from windi_chat.inputs import PathId
from windi_chat.schemas import ChatOut, GroupChatCreate, PrivateChatCreate
from windi_chat.security import CurrentUser

__all__ = ("ChatController", "GroupController")

ChatCreate = PrivateChatCreate | GroupChatCreate
MAX_INBOX_PAGE = 200


class ChatController(Controller):
    path = "/chats"
    tags = ["chats"]

    @post(
        "/",
        operation_id="createChat",
        summary="Start a private chat or create a group",
        status_code=HTTP_201_CREATED,
        responses=error_responses(InvalidError, UserNotFoundError, GroupFullError),
    )
    async def create(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[ChatCreate],
        chats: NamedDependency[ChatService],
        settings: NamedDependency[Settings],
        events: NamedDependency[EventBus],
    ) -> Response[ChatOut]:
        """201 with the new chat. A private chat the two already share comes back as 200, whoever made it.

        A private chat with yourself is 400; unknown users are 404. Group members listed twice count once;
        a group of more than ``WINDI_MAX_GROUP_MEMBERS`` (the owner included) is 409, ``group is full``.
        """
        if isinstance(data, PrivateChatCreate):
            chat, created = await chats.open_private(request.user.id, data.user_id, events)
            return Response(chat, status_code=HTTP_201_CREATED if created else HTTP_200_OK)
        group = await chats.create_group(request.user.id, data, settings.max_group_members, events)
        return Response(group, status_code=HTTP_201_CREATED)

    @get(
        "/",
        operation_id="listChats",
        summary="The caller's chats, most recent activity first, a page at a time",
        response_headers=[
            ResponseHeader(
                name="Link",
                documentation_only=True,
                description='`<...>; rel="next"`: the next page, when there is one',
            )
        ],
    )
    async def inbox(
        self,
        request: Request[CurrentUser, Any, Any],
        chats: NamedDependency[ChatService],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_INBOX_PAGE, description="Page size, 1..200")] = 100,
        before: Annotated[
            str | None,
            QueryParameter(
                max_length=40, description='The cursor from the previous page\'s `Link: <...>; rel="next"`'
            ),
        ] = None,
    ) -> Response[list[ChatOut]]:
        """Each chat with its last message (or null) and the caller's unread count. A group lists its first
        20 members (by joining order) and ``member_count``; ``GET /chats/{id}`` lists them all.

        When more chats follow, the ``Link`` header names the next page. Its ``before`` cursor is the
        sort key of the page's last chat, so a chat that becomes active while paging moves to the first
        page (read it again to see it) and no chat is listed twice or skipped.
        """
        cursor = None
        if before is not None:
            cursor = InboxCursor.parse(before)
            if cursor is None:
                raise ClientException("before must be a cursor from a Link header of GET /chats")
        page, next_cursor = await chats.inbox(request.user.id, limit, cursor)
        headers = {}
        if next_cursor is not None:
            query = urlencode({"limit": limit, "before": str(next_cursor)})
            headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
        return Response(page, headers=headers)

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
        responses=error_responses(
            ChatNotFoundError, UserNotFoundError, NotAllowedError, AlreadyMemberError, GroupFullError
        ),
    )
    async def add_user(
        self,
        request: Request[CurrentUser, Any, Any],
        group_id: PathId,
        user_id: PathId,
        chats: NamedDependency[ChatService],
        events: NamedDependency[EventBus],
        settings: NamedDependency[Settings],
    ) -> ChatOut:
        """403 for a member who is not the owner; 404 for a group the caller is not in or an unknown user;
        409 for someone already in, or a group already at ``WINDI_MAX_GROUP_MEMBERS`` (``group is full``).
        The new member sees the whole history, with nothing unread.
        """
        return await chats.add_member(group_id, request.user.id, user_id, events, settings.max_group_members)

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
