"""Changing messages over REST: edits, deletes and reactions, through the actions in ``message_changes``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, patch, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_204_NO_CONTENT
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.config import Settings
from windi_chat.errors import (
    ChatNotFoundError,
    InvalidMessageError,
    InvalidReactionError,
    MessageDeletedError,
    MessageNotFoundError,
    NotYourMessageError,
    RateLimitedError,
    TooManyReactionsError,
)
from windi_chat.events import EventBus
from windi_chat.http_errors import error_responses
from windi_chat.inputs import MAX_ID, PathId
from windi_chat.limits import PersonLimits
from windi_chat.message_changes import CHANGES_LIMITED, delete_message, edit_message, react
from windi_chat.schemas import EditMessageIn, MessageOut
from windi_chat.security import CurrentUser

__all__ = ("MessageChangeController",)

# Out of range, a seq names no message: answered 404, like one that does not exist.
PathSeq = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="The message's seq in the chat")]
PathEmoji = Annotated[str, PathParameter(description="The emoji, percent-encoded: 1 to 32 bytes of UTF-8")]

_MESSAGE_PATH = "/chats/{chat_id:int}/messages/{seq:int}"
_REACTION_PATH = _MESSAGE_PATH + "/reactions/{emoji:str}"


class MessageChangeController(Controller):
    tags = ["messages"]

    @patch(
        _MESSAGE_PATH,
        operation_id="editMessage",
        summary="Edit one of your messages",
        responses=error_responses(
            ChatNotFoundError,
            MessageNotFoundError,
            InvalidMessageError,
            NotYourMessageError,
            MessageDeletedError,
            RateLimitedError,
        ),
    )
    async def edit(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        seq: PathSeq,
        data: JSONBody[EditMessageIn],
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        limits: NamedDependency[PersonLimits],
    ) -> MessageOut:
        """The updated message, sent to every member's sockets as ``message_updated``. Only the sender may
        edit (403); a deleted message cannot be (409). The text rules of sending apply. The same text
        again changes nothing and answers with the message as it is.
        """
        limits.sends.check(request.user.id, CHANGES_LIMITED)
        return await edit_message(db_session, events, chat_id, request.user.id, seq, data.text)

    @delete(
        _MESSAGE_PATH,
        operation_id="deleteMessage",
        summary="Delete a message for everyone",
        status_code=HTTP_204_NO_CONTENT,
        responses=error_responses(
            ChatNotFoundError, MessageNotFoundError, NotYourMessageError, RateLimitedError
        ),
    )
    async def remove(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        seq: PathSeq,
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        limits: NamedDependency[PersonLimits],
    ) -> None:
        """The sender may delete a message, and so may a group's owner (others: 403). Its text and
        reactions are erased from the database; it keeps its seq as a tombstone (``deleted: true``,
        ``text: ""``). Deleting it again answers 204 too.
        """
        limits.sends.check(request.user.id, CHANGES_LIMITED)
        await delete_message(db_session, events, chat_id, request.user.id, seq)

    @put(
        _REACTION_PATH,
        operation_id="addReaction",
        summary="Add your reaction to a message",
        status_code=HTTP_204_NO_CONTENT,
        responses=error_responses(
            ChatNotFoundError,
            MessageNotFoundError,
            InvalidReactionError,
            MessageDeletedError,
            TooManyReactionsError,
            RateLimitedError,
        ),
    )
    async def add_reaction(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        seq: PathSeq,
        emoji: PathEmoji,
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        limits: NamedDependency[PersonLimits],
        settings: NamedDependency[Settings],
    ) -> None:
        """Idempotent: a reaction already there answers 204 and changes nothing. A message carries at
        most ``WINDI_MAX_REACTIONS_PER_MESSAGE`` different emoji: a new one past that answers 409, as does
        a deleted message.
        """
        limits.sends.check(request.user.id, CHANGES_LIMITED)
        maximum = settings.max_reactions_per_message
        await react(db_session, events, chat_id, request.user.id, seq, emoji, on=True, max_reactions=maximum)

    @delete(
        _REACTION_PATH,
        operation_id="removeReaction",
        summary="Take back your reaction to a message",
        status_code=HTTP_204_NO_CONTENT,
        responses=error_responses(
            ChatNotFoundError, MessageNotFoundError, InvalidReactionError, RateLimitedError
        ),
    )
    async def remove_reaction(
        self,
        request: Request[CurrentUser, Any, Any],
        chat_id: PathId,
        seq: PathSeq,
        emoji: PathEmoji,
        db_session: NamedDependency[AsyncSession],
        events: NamedDependency[EventBus],
        limits: NamedDependency[PersonLimits],
        settings: NamedDependency[Settings],
    ) -> None:
        """Idempotent: a reaction that is not there answers 204 and changes nothing."""
        limits.sends.check(request.user.id, CHANGES_LIMITED)
        maximum = settings.max_reactions_per_message
        await react(db_session, events, chat_id, request.user.id, seq, emoji, on=False, max_reactions=maximum)
