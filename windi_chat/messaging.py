"""Messages: sending, reading, history. Every rule about messages lives here."""

from __future__ import annotations

from windi_chat.models import Message
from windi_chat.schemas import MessageOut

__all__ = ("message_out",)


def message_out(message: Message, all_read_seq: int) -> MessageOut:
    """The wire form; ``read`` means every member's marker has reached this message."""
    return MessageOut(
        id=message.id,
        chat_id=message.chat_id,
        seq=message.seq,
        sender_id=message.sender_id,
        text=message.text,
        timestamp=message.created_at,
        client_id=message.client_id,
        read=message.seq <= all_read_seq,
    )
