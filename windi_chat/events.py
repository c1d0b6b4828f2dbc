"""Events to the sockets of a chat, published only once the change they tell of has committed.

An action hands its events to the :class:`EventBus` together with its database session; they wait in
``session.info`` and go out from the session's ``after_commit`` hook, or are dropped when the
transaction ends any other way. "Publish after commit" is therefore the structure, not a habit of each
action (Zulip's ``send_event_on_commit``), and a client never hears of a change the database does not
hold.

Each event travels as ``<header>\\n<frame JSON>``. The socket forwards the frame bytes as they are and
reads only the short header to decide what to do: skip a message it already sent during catch-up
(``M<seq>:<rev>``: a socket that catches up by seq compares seqs, one that catches up by rev compares
revs) or a change it already sent (``U<rev>``: an edit, a delete or a reaction), skip its own typing
event (``T<socket id>``), close when its user is removed (``R<user id>``), skip presence
(``O<user id>``), which only gateways carry. The frame is encoded once per event, whatever the number
of sockets.

Revoked sessions go out on a channel of their own, :data:`SESSIONS_CHANNEL`, that every process
listens to (see ``revocations``): ``S<session id> <session id>...``. Who is online on which process
travels on :data:`PRESENCE_CHANNEL` (see ``presence``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

import msgspec
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from windi_chat.frames import (
    ChatAddedFrame,
    MemberAddedFrame,
    MemberRemovedFrame,
    MessageFrame,
    MessageUpdatedFrame,
    PresenceFrame,
    ReadEventFrame,
    TypingEventFrame,
)
from windi_chat.schemas import ChatOut, MessageOut

__all__ = (
    "PRESENCE_CHANNEL",
    "SESSIONS_CHANNEL",
    "Event",
    "EventBus",
    "Publish",
    "chat_channel",
    "discard",
    "event_payload",
    "message_event",
    "message_header",
    "message_position",
    "read_event",
    "revocation_payload",
    "split_event",
    "user_channel",
)

KIND_MESSAGE = ord("M")
KIND_UPDATED = ord("U")
KIND_TYPING = ord("T")
KIND_REMOVED = ord("R")
KIND_OTHER = ord("-")
KIND_PRESENCE = ord("O")  # not "P": that marks an event read by the poller (``seam.POLLED``)
KIND_ADDED = ord("A")  # on a person's own channel: ``A<chat id> <last seq> <their read marker>``

SESSIONS_CHANNEL = "sessions"
KIND_REVOKED = ord("S")
PRESENCE_CHANNEL = "presence"

Publish = Callable[[bytes, str | list[str]], None]
"""Hands ``(payload, channel or channels)`` to live delivery; it must not block (the channels plugin queues).

Several channels go out as one publish: one round trip to the backend (a Lua script on Redis, one
transaction of NOTIFYs on PostgreSQL), the frame encoded once.
"""

Event = tuple[bytes, str]
"""``(payload, channel)`` of one event to a chat's sockets."""

_PENDING = "windi_chat.pending_events"
_encoder = msgspec.json.Encoder()


def chat_channel(chat_id: int) -> str:
    return f"chat:{chat_id}"


def user_channel(user_id: int) -> str:
    """A person's own channel: what their gateways hear that belongs to no chat they are in yet."""
    return f"user:{user_id}"


def discard(_payload: bytes, _channel: str | list[str]) -> None:
    """Publishing where no socket can listen: the demo loader, in-process benchmarks."""


@lru_cache(maxsize=64)
def split_event(payload: bytes) -> tuple[int, bytes, str]:
    """``(kind, header argument, frame text)`` of a published event.

    Every socket of a chat is handed the same payload object, so caching parses it once per event
    rather than once per socket.
    """
    header, _, frame = payload.partition(b"\n")
    return header[0], header[1:], frame.decode()


def message_header(seq: int, rev: int) -> bytes:
    """The header of a new message's event: both its counters, so either kind of socket can compare."""
    return b"M%d:%d" % (seq, rev)


@lru_cache(maxsize=64)
def message_position(argument: bytes) -> tuple[int, int]:
    """``(seq, rev)`` from a message event's header argument, parsed once per event like ``split_event``."""
    seq, _, rev = argument.partition(b":")
    return int(seq), int(rev)


class EventBus:
    """What actions publish; one method per kind of event."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    def _on_commit(self, session: AsyncSession, chat_id: int, header: bytes, frame: msgspec.Struct) -> None:
        self._queue(session, event_payload(header, frame), chat_channel(chat_id))

    def _queue(self, session: AsyncSession, payload: bytes, channel: str | list[str]) -> None:
        session.info.setdefault(_PENDING, []).append((self._publish, payload, channel))

    def on_commit(self, session: AsyncSession, events: Iterable[Event]) -> None:
        """Events built ahead (``message_event``, ``read_event``), to go out once ``session`` commits."""
        for payload, channel in events:
            self._queue(session, payload, channel)

    def committed(self, events: Iterable[Event]) -> None:
        """Events of a change the caller has just committed on a connection of its own."""
        for payload, channel in events:
            self._publish(payload, channel)

    def sessions_revoked(self, session: AsyncSession, session_ids: list[str]) -> None:
        """Every process forgets these sessions and closes their sockets, once the revocation commits."""
        if session_ids:
            self._queue(session, revocation_payload(session_ids), SESSIONS_CHANNEL)

    def message(self, session: AsyncSession, message: MessageOut) -> None:
        self._queue(session, *message_event(message))

    def message_updated(self, session: AsyncSession, message: MessageOut) -> None:
        """An edit, a delete or a reaction change: the message's whole state, under its new rev."""
        self._on_commit(session, message.chat_id, b"U%d" % message.rev, MessageUpdatedFrame(message=message))

    def read(self, session: AsyncSession, chat_id: int, user_id: int, seq: int, all_read_seq: int) -> None:
        self._queue(session, *read_event(chat_id, user_id, seq, all_read_seq))

    def member_added(self, session: AsyncSession, chat_id: int, user_id: int) -> None:
        self._on_commit(session, chat_id, b"-", MemberAddedFrame(chat_id=chat_id, user_id=user_id))

    def member_removed(self, session: AsyncSession, chat_id: int, user_id: int) -> None:
        frame = MemberRemovedFrame(chat_id=chat_id, user_id=user_id)
        self._on_commit(session, chat_id, b"R%d" % user_id, frame)

    def chat_added(self, session: AsyncSession, user_ids: Iterable[int], chat: ChatOut) -> None:
        """The chat is in these people's inboxes now, as ``chat`` shows it to each of them.

        Their gateways announce it and subscribe to its channel; the header says from which seq on
        they deliver its messages, and where the person's read marker stands.
        """
        last_seq = chat.last_message.seq if chat.last_message is not None else 0
        header = b"A%d %d %d" % (chat.id, last_seq, max(0, last_seq - chat.unread_count))
        payload = event_payload(header, ChatAddedFrame(chat=chat))
        self._queue(session, payload, [user_channel(user_id) for user_id in user_ids])

    def presence(self, session: AsyncSession, chat_ids: list[int], frame: PresenceFrame) -> None:
        """A person came online or went offline: one publish to every chat they are in, once committed."""
        if chat_ids:
            payload = event_payload(b"O%d" % frame.user_id, frame)
            self._queue(session, payload, [chat_channel(chat_id) for chat_id in chat_ids])

    def typing(self, chat_id: int, user_id: int, socket_id: str) -> None:
        """Typing changes nothing stored, so it goes out at once."""
        frame = TypingEventFrame(chat_id=chat_id, user_id=user_id)
        self._publish(b"T" + socket_id.encode() + b"\n" + _encoder.encode(frame), chat_channel(chat_id))


def event_payload(header: bytes, frame: msgspec.Struct) -> bytes:
    """An event as it travels: the short header a socket reads, then the frame it forwards as is."""
    return header + b"\n" + _encoder.encode(frame)


def message_event(message: MessageOut) -> Event:
    """A new message, to its chat's sockets."""
    header = message_header(message.seq, message.rev)
    return event_payload(header, MessageFrame(message=message)), chat_channel(message.chat_id)


def read_event(chat_id: int, user_id: int, seq: int, all_read_seq: int) -> Event:
    """A reader's marker moved (and with it, perhaps, the chat's all_read_seq)."""
    frame = ReadEventFrame(chat_id=chat_id, user_id=user_id, seq=seq, all_read_seq=all_read_seq)
    return event_payload(b"-", frame), chat_channel(chat_id)


def revocation_payload(session_ids: list[str]) -> bytes:
    return b"S" + " ".join(session_ids).encode()


@event.listens_for(Session, "after_commit")
def _publish_pending(session: Session) -> None:
    for publish, payload, channel in session.info.pop(_PENDING, ()):
        publish(payload, channel)


@event.listens_for(Session, "after_transaction_end")
def _drop_unpublished(session: Session, transaction: SessionTransaction) -> None:
    """A transaction that ended without a commit (rolled back, or closed) takes its events with it."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
