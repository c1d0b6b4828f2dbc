"""Messages over REST: history, the change feed, sending and read markers, through ``messaging``."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.errors import ChatNotFoundError, InvalidMessageError, RateLimitedError
from windi_chat.events import EventBus
from windi_chat.http_errors import error_responses
from windi_chat.inputs import MAX_ID, MAX_OFFSET, PathId
from windi_chat.limits import READS_LIMITED, PersonLimits
from windi_chat.messaging import changes, history, mark_read
from windi_chat.metrics import METERS, SEND_LATENCY_REST
from windi_chat.schemas import MessageOut, ReadIn, ReadOut, SendMessageIn
from windi_chat.security import CurrentUser
from windi_chat.writer import MessageWriter

__all__ = ("MAX_PAGE", "MessageController")

MAX_PAGE = 200

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Page size, 1..200")]
Seq = Annotated[int | None, QueryParameter(ge=0, le=MAX_ID)]
FeedLimit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Page size, 1..200 (default 100)")]
Rev = Annotated[
    int, QueryParameter(ge=0, le=MAX_ID, description="The rev the client holds; 0 (the default) for all")
]


class MessageController(Controller):
    tags = ["messages"]

    @get(
        "/history/{chat_id:int}",
        operation_id="history",
        summary="A page of a chat's messages, ascending by seq",
        responses=error_responses(ChatNotFoundError),
    )
    async def history(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        db_session: NamedDependency[AsyncSession],
        limit: Limit = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
        after_seq: Seq = None,
        before_seq: Seq = None,
    ) -> list[MessageOut]:
        """Page by ``offset``, or without offsets: ``after_seq=N`` gives the messages after N (catch-up),
        ``before_seq=N`` the ``limit`` messages just before N (scrolling back). Use one of the three.
        """
        if sum((offset > 0, after_seq is not None, before_seq is not None)) > 1:
            raise ClientException("Use one of offset, after_seq and before_seq")
        return await history(db_session, chat_id, request.user.id, limit, offset, after_seq, before_seq)

    @get(
        "/chats/{chat_id:int}/changes",
        operation_id="changes",
        summary="The chat's change feed: messages changed after a rev, ascending by rev",
        responses=error_responses(ChatNotFoundError),
    )
    async def changes(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        db_session: NamedDependency[AsyncSession],
        after_rev: Rev = 0,
        limit: FeedLimit = 100,
    ) -> list[MessageOut]:
        """Every message whose ``rev`` is past ``after_rev``, each once in its current state: new messages,
        edited ones, deleted ones (as tombstones: ``deleted``, ``text`` empty) and ones whose reactions
        changed. Page on with the last message's ``rev`` until a page is shorter than ``limit``.
        """
        return await changes(db_session, chat_id, request.user.id, after_rev, limit)

    @post(
        "/chats/{chat_id:int}/messages",
        operation_id="sendMessage",
        summary="Send a message",
        status_code=HTTP_201_CREATED,
        responses={
            HTTP_200_OK: ResponseSpec(MessageOut, description="A repeated client_id: the original message"),
            **error_responses(ChatNotFoundError, InvalidMessageError, RateLimitedError),
        },
    )
    async def send(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        data: JSONBody[SendMessageIn],
        writer: NamedDependency[MessageWriter],
    ) -> Response[MessageOut]:
        """201 with the stored message, delivered to every open socket of the chat. Sending again with
        the same ``client_id`` stores nothing and answers 200 with the original message. A person past
        ``WINDI_SEND_RATE`` sends a second (after a burst of ``WINDI_SEND_BURST``), over REST and sockets
        together, gets 429 with ``Retry-After``.
        """
        started = time.perf_counter() if METERS.on else 0.0
        sent = await writer.send(chat_id, request.user.id, data.client_id, data.text, data.reply_to)
        if started:  # from the handler's start: the body is parsed and the token checked by then
            SEND_LATENCY_REST.observe(time.perf_counter() - started)
        return Response(sent.message, status_code=HTTP_201_CREATED if sent.created else HTTP_200_OK)

    @post(
        "/chats/{chat_id:int}/read",
        operation_id="markRead",
        summary="Mark the chat as read up to a seq",
        status_code=HTTP_200_OK,
        responses=error_responses(ChatNotFoundError, RateLimitedError),
    )
    async def read(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        data: JSONBody[ReadIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        limits: NamedDependency[PersonLimits],
    ) -> ReadOut:
        """The marker only moves forward and stops at the chat's last message. ``all_read_seq``: every
        message up to it has been read by every member. A person's read markers, over REST and sockets
        together, are limited like their sends (``WINDI_SEND_RATE``): past it, 429 with ``Retry-After``.
        """
        limits.reads.check(request.user.id, READS_LIMITED)
        return await mark_read(db_session, events, chat_id, request.user.id, data.seq)
