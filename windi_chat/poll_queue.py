"""Which of a chat's polled rows each socket gets, and as what (see ``windi_chat.poller``).

The poller reads a chat's new messages by seq and its changes by rev. A socket that follows seqs keeps
getting its new messages in seq order, as ``message`` frames, and changes to the messages it has as
``message_updated``; one that follows revs (``after_rev``) gets everything in rev order. Each queued
event moves the socket's ``queued`` marks (``windi_chat.seam``), so the next read starts after it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from windi_chat.events import event_payload, message_header
from windi_chat.frames import MessageFrame, MessageUpdatedFrame
from windi_chat.messaging import message_out
from windi_chat.schemas import MessageOut, ReactionOut
from windi_chat.seam import polled

if TYPE_CHECKING:
    from windi_chat.connection import ChatConnection

__all__ = ("PolledRows", "queue_rows", "seqs_by_chat")


class PolledRows:
    """Message rows of one chat as polled events, each encoded once however many sockets take it."""

    def __init__(self, reactions: dict[tuple[int, int], dict[str, list[int]]], all_read_seq: int) -> None:
        self._reactions = reactions
        self._all_read_seq = all_read_seq
        self._messages: dict[tuple[int, int], MessageOut] = {}

    def _out(self, row: Row[Any]) -> MessageOut:
        key = (row.seq, row.rev)
        if key not in self._messages:
            people = self._reactions.get((row.chat_id, row.seq), {})
            reactions = [ReactionOut(emoji, users) for emoji, users in people.items()]
            self._messages[key] = message_out(row, self._all_read_seq, reactions)
        return self._messages[key]

    def added(self, row: Row[Any]) -> bytes:
        return polled(event_payload(message_header(row.seq, row.rev), MessageFrame(message=self._out(row))))

    def updated(self, row: Row[Any]) -> bytes:
        return polled(event_payload(b"U%d" % row.rev, MessageUpdatedFrame(message=self._out(row))))


def queue_rows(
    sockets: list[ChatConnection], rows: PolledRows, added: list[Row[Any]], changed: list[Row[Any]]
) -> None:
    """New messages (``added``, in seq order) and changes (``changed``, in rev order) of one chat.

    A socket that follows revs gets ``changed`` alone, in rev order: a message it has not had comes as
    new, the others as changes. One that follows seqs gets its new messages in seq order from
    ``added``, each before any change with a higher rev, so the revs it is sent never go back; and of
    ``changed``, only changes to messages it has.
    """
    just_added = {row.seq: row.rev for row in added}
    for connection in sockets:
        feed = connection.feed
        had = feed.seqs.cursor
        waiting = deque(() if feed.by_rev else (row for row in added if row.seq > had))
        for row in changed:
            if row.rev <= feed.revs.cursor:
                continue
            if feed.by_rev:
                new = row.seq > feed.seqs.cursor
                connection.enqueue(rows.added(row) if new else rows.updated(row))
                feed.seqs.queued = max(feed.seqs.queued, row.seq)
            elif row.seq <= had or just_added.get(row.seq, row.rev) < row.rev:
                # A message it had, or one about to be queued as new in an older state.
                while waiting and waiting[0].rev < row.rev:
                    _queue_new(connection, rows, waiting.popleft())
                connection.enqueue(rows.updated(row))
            # Else new to a socket that follows seqs: queued below, or comes in a later read by seq.
            feed.revs.queued = row.rev
        for row in waiting:
            _queue_new(connection, rows, row)


def _queue_new(connection: ChatConnection, rows: PolledRows, row: Row[Any]) -> None:
    connection.enqueue(rows.added(row))
    connection.feed.seqs.queued = row.seq


def seqs_by_chat(rows: list[Row[Any]]) -> dict[int, list[int]]:
    """The seqs of these rows, by chat, each once: what to read the reactions of."""
    seqs: dict[int, set[int]] = {}
    for row in rows:
        seqs.setdefault(row.chat_id, set()).add(row.seq)
    return {chat_id: sorted(found) for chat_id, found in seqs.items()}
