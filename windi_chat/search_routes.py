"""Message search over REST, through the action in ``search``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.config import Settings
from windi_chat.errors import ChatNotFoundError, InvalidSearchError, RateLimitedError, SearchBusyError
from windi_chat.http_errors import error_responses
from windi_chat.inputs import is_id
from windi_chat.limits import SEARCHES_LIMITED, PersonLimits
from windi_chat.schemas import MessageOut
from windi_chat.search import MAX_RESULTS, SearchSlots, search_messages
from windi_chat.security import CurrentUser

__all__ = ("SearchController",)


class SearchController(Controller):
    tags = ["messages"]

    @get(
        "/search",
        operation_id="searchMessages",
        summary="Find messages in the caller's chats",
        responses=error_responses(ChatNotFoundError, InvalidSearchError, RateLimitedError, SearchBusyError),
    )
    async def search(
        self,
        request: Request[CurrentUser, Any, Any],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        limits: NamedDependency[PersonLimits],
        search_slots: NamedDependency[SearchSlots],
        q: Annotated[str, QueryParameter(description="Words to find, as in a web search")],
        chat_id: Annotated[int | None, QueryParameter(description="Only this chat")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_RESULTS, description="1..50")] = 20,
    ) -> list[MessageOut]:
        """Messages of the chats the caller is a member of now, deleted ones never, most relevant first
        and newest first among equals. Relevance ranks the newest ``WINDI_SEARCH_CANDIDATES`` matches.

        ``q`` reads like a web search: every word must appear, ``"words in quotes"`` together, ``-word``
        must not, and ``or`` offers alternatives. Case does not matter; words are matched whole, in any
        language. An empty query, or one longer than ``WINDI_SEARCH_MAX_QUERY_LENGTH`` characters, is
        400. A ``chat_id`` the caller is not in is 404, as is one out of range (it names no chat).
        Past ``WINDI_SEARCH_RATE`` searches a second (after a burst of ``WINDI_SEARCH_BURST``): 429. A
        search that finds no free slot (``WINDI_SEARCH_CONCURRENCY`` per process) or runs past
        ``WINDI_SEARCH_TIMEOUT_SECONDS`` is 503.
        """
        limits.searches.check(request.user.id, SEARCHES_LIMITED)
        if chat_id is not None and not is_id(chat_id):
            raise ChatNotFoundError
        async with search_slots.slot():
            return await search_messages(
                db_session,
                request.user.id,
                q,
                limit=limit,
                max_query_length=settings.search_max_query_length,
                candidates=settings.search_candidates,
                time_limit=settings.search_timeout_seconds,
                chat_id=chat_id,
            )
