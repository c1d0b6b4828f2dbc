"""The socket frames that change a stored message, answered through the actions of ``message_changes``.

Kept apart from any one socket's loops so that every kind of socket (a chat's, or one that carries
many chats) answers ``edit``, ``delete`` and ``react`` the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from windi_chat.database import unit_of_work
from windi_chat.frames import AckFrame, DeleteFrame, EditFrame, MessageChangeFrame
from windi_chat.message_changes import CHANGES_LIMITED, delete_message, edit_message, react

if TYPE_CHECKING:
    from windi_chat.connection_core import SocketContext

__all__ = ("change_message",)


async def change_message(
    context: SocketContext, chat_id: int, user_id: int, frame: MessageChangeFrame
) -> AckFrame:
    """Carry out an ``edit``, ``delete`` or ``react`` frame; the ``ack`` carries the message as it now is.

    Each counts against the person's send allowance. Errors are the actions' own, for the socket to
    turn into an error frame.
    """
    context.limits.sends.check(user_id, CHANGES_LIMITED)
    async with unit_of_work(context.sessions) as session:
        if isinstance(frame, EditFrame):
            message = await edit_message(session, context.events, chat_id, user_id, frame.seq, frame.text)
        elif isinstance(frame, DeleteFrame):
            message = await delete_message(session, context.events, chat_id, user_id, frame.seq)
        else:
            message = await react(
                session,
                context.events,
                chat_id,
                user_id,
                frame.seq,
                frame.emoji,
                on=frame.on,
                max_reactions=context.settings.max_reactions_per_message,
            )
    return AckFrame(client_id=frame.client_id, message=message)
