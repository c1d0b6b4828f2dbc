"""The inbox's paging cursor: where one page of ``GET /chats`` ends and the next begins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

__all__ = ("InboxCursor",)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ID = 2**63 - 1


class InboxCursor(NamedTuple):
    """Where a page of the inbox ends: the last chat's activity time and id, the inbox's sort key.

    On the wire, ``<microseconds since 1970>-<chat id>``. A key, not a position: a chat that moves to the
    top while someone pages is neither listed twice nor makes another chat be skipped.
    """

    last_activity_at: datetime
    chat_id: int

    def __str__(self) -> str:
        micros = (self.last_activity_at - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{self.chat_id}"

    @classmethod
    def parse(cls, text: str) -> InboxCursor | None:
        """The cursor, or None when ``text`` is not one this server wrote."""
        micros, _, chat_id = text.partition("-")
        if not (micros.isascii() and micros.isdigit() and chat_id.isascii() and chat_id.isdigit()):
            return None
        if len(micros) > 18 or int(chat_id) > _MAX_ID:
            return None
        try:
            return cls(_EPOCH + timedelta(microseconds=int(micros)), int(chat_id))
        except OverflowError:
            return None
