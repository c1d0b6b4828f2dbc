"""The SQL of reading messages and moving read markers (storing sends is ``batch_sql``).

The hot statements are built once, from the models, and reused: building and compiling them is then
paid once per process, and the database sees the same prepared statement every time. Each one reads
or writes the rows of a single chat.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CursorResult,
    Integer,
    Row,
    String,
    bindparam,
    case,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.models import metadata

__all__ = (
    "all_read_of",
    "all_read_seq",
    "changes",
    "changes_up_to",
    "last_rev",
    "last_seq",
    "member_last_seq",
    "member_position",
    "move_read_marker",
    "original",
    "page",
    "reactions_of",
    "rows_after",
)

# Plain Core on the tables, not the ORM entities: a statement that names an entity is executed through
# the ORM's machinery, which costs more CPU than the database round trip itself.
_chats, _members, _messages, _reactions = (
    metadata.tables[name] for name in ("chats", "chat_members", "messages", "message_reactions")
)
# Parameters shared by the statements below. None is named like a column: SQLAlchemy would take such
# a parameter of an UPDATE or INSERT as a value to write.
_chat = bindparam("chat", type_=BigInteger)
_sender = bindparam("sender", type_=BigInteger)
_person = bindparam("person", type_=BigInteger)
_limit = bindparam("limit", type_=Integer)


# Read markers ---------------------------------------------------------------------------------------

# Locking the chat row makes concurrent readers take turns, so the last of them to commit sees every
# other marker and announces the true all_read_seq.
_LOCK_FOR_READER = (
    select(_chats.c.last_seq)
    .join(_members, (_members.c.chat_id == _chats.c.id) & (_members.c.user_id == _person))
    .where(_chats.c.id == _chat)
    .with_for_update(of=_chats)
)
_MOVE_MARKER = (
    update(_members)
    .where(
        _members.c.chat_id == _chat,
        _members.c.user_id == _person,
        _members.c.read_seq < bindparam("target", type_=BigInteger),
    )
    .values(read_seq=bindparam("target", type_=BigInteger))
)
_MARKERS = select(
    func.max(case((_members.c.user_id == _person, _members.c.read_seq), else_=0)),
    func.min(_members.c.read_seq),
).where(_members.c.chat_id == _chat)


async def move_read_marker(
    session: AsyncSession, chat_id: int, user_id: int, seq: int
) -> tuple[bool, int, int] | None:
    """``(moved, the reader's marker, all_read_seq)``, or None when the reader is not a member.

    The marker moves forward to ``seq``, clamped to the chat's last message, and never back.
    """
    parameters = {"chat": chat_id, "person": user_id}
    last_seq = await session.scalar(_LOCK_FOR_READER, parameters)
    if last_seq is None:
        return None
    moved = cast(
        "CursorResult[Any]", await session.execute(_MOVE_MARKER, {**parameters, "target": min(seq, last_seq)})
    )
    mine, all_read = (await session.execute(_MARKERS, parameters)).one()
    return moved.rowcount > 0, mine, all_read


# Reading --------------------------------------------------------------------------------------------

# The lowest marker of the chat's members, as a column of a message query: every message with a seq
# at or below it has been read by everyone.
all_read_seq = (
    select(func.coalesce(func.min(_members.c.read_seq), 0))
    .where(_members.c.chat_id == _chat)
    .scalar_subquery()
    .label("all_read_seq")
)
# Messages as plain rows, not ORM objects: they are read-only here, and loading entities would cost
# most of a page's CPU.
_message_rows = select(_messages, all_read_seq).where(_messages.c.chat_id == _chat)
_ORIGINAL = _message_rows.where(
    _messages.c.sender_id == _sender, _messages.c.client_id == bindparam("client", type_=String)
)
# A member's page carries the chat's all_read_seq; a caller who is not a member gets no rows.
_is_member = exists().where(_members.c.chat_id == _chat, _members.c.user_id == _person).correlate(None)
_page = _message_rows.where(_is_member)
_PAGE_BEFORE = (
    _page.where(_messages.c.seq < bindparam("before_seq")).order_by(_messages.c.seq.desc()).limit(_limit)
)
_PAGE_AFTER = _page.where(_messages.c.seq > bindparam("after_seq")).order_by(_messages.c.seq).limit(_limit)
_PAGE_OFFSET = _page.order_by(_messages.c.seq).limit(_limit).offset(bindparam("offset", type_=Integer))
_MEMBER = select(_is_member)
_ALL_READ = select(all_read_seq)
_AFTER = _message_rows.where(_messages.c.seq > bindparam("after_seq")).order_by(_messages.c.seq).limit(_limit)
_LAST_SEQ = select(_chats.c.last_seq).where(_chats.c.id == _chat)
_LAST_REV = select(_chats.c.last_rev).where(_chats.c.id == _chat)
_MEMBER_POSITION = (
    select(_chats.c.last_seq, _chats.c.last_rev)
    .join(_members, (_members.c.chat_id == _chats.c.id) & (_members.c.user_id == _person))
    .where(_chats.c.id == _chat)
)
_MEMBER_LAST_SEQ = (
    select(_chats.c.last_seq)
    .join(_members, (_members.c.chat_id == _chats.c.id) & (_members.c.user_id == _person))
    .where(_chats.c.id == _chat)
)
# The change feed: each message once, at its latest rev, read by the (chat_id, rev) unique index.
_after_rev = _messages.c.rev > bindparam("after_rev", type_=BigInteger)
_CHANGES = _page.where(_after_rev).order_by(_messages.c.rev).limit(_limit)
_CHANGES_UP_TO = (
    _message_rows.where(_after_rev, _messages.c.rev <= bindparam("up_to", type_=BigInteger))
    .order_by(_messages.c.rev)
    .limit(_limit)
)


async def original(session: AsyncSession, chat_id: int, sender_id: int, client_id: str) -> Row[Any] | None:
    """The message stored under this client id, if any."""
    parameters = {"chat": chat_id, "sender": sender_id, "client": client_id}
    return (await session.execute(_ORIGINAL, parameters)).one_or_none()


async def page(
    session: AsyncSession,
    chat_id: int,
    user_id: int,
    limit: int,
    offset: int = 0,
    after_seq: int | None = None,
    before_seq: int | None = None,
) -> list[Row[Any]] | None:
    """A member's page, ascending by seq, or None when ``user_id`` is not a member.

    Only an empty page costs a second query, to tell "not a member" from "no messages there".
    """
    parameters: dict[str, Any] = {"chat": chat_id, "person": user_id, "limit": limit}
    if before_seq is not None:
        statement, parameters["before_seq"] = _PAGE_BEFORE, before_seq
    elif after_seq is not None:
        statement, parameters["after_seq"] = _PAGE_AFTER, after_seq
    else:
        statement, parameters["offset"] = _PAGE_OFFSET, offset
    rows = list((await session.execute(statement, parameters)).all())
    if not rows and not await session.scalar(_MEMBER, parameters):
        return None
    if before_seq is not None:
        rows.reverse()
    return rows


async def rows_after(session: AsyncSession, chat_id: int, after_seq: int, limit: int) -> list[Row[Any]]:
    """Up to ``limit`` messages after ``after_seq``, in seq order (no membership check)."""
    parameters = {"chat": chat_id, "after_seq": after_seq, "limit": limit}
    return list((await session.execute(_AFTER, parameters)).all())


async def changes(
    session: AsyncSession, chat_id: int, user_id: int, after_rev: int, limit: int
) -> list[Row[Any]] | None:
    """A member's page of the change feed, ascending by rev, or None when ``user_id`` is not a member."""
    parameters = {"chat": chat_id, "person": user_id, "after_rev": after_rev, "limit": limit}
    rows = list((await session.execute(_CHANGES, parameters)).all())
    if not rows and not await session.scalar(_MEMBER, parameters):
        return None
    return rows


async def changes_up_to(
    session: AsyncSession, chat_id: int, after_rev: int, up_to: int, limit: int
) -> list[Row[Any]]:
    """Up to ``limit`` messages whose rev is past ``after_rev`` and at most ``up_to``, in rev order."""
    parameters = {"chat": chat_id, "after_rev": after_rev, "up_to": up_to, "limit": limit}
    return list((await session.execute(_CHANGES_UP_TO, parameters)).all())


# By rev: each emoji comes first where it was first used, and its people in the order they chose it.
_REACTIONS = (
    select(_reactions.c.seq, _reactions.c.emoji, _reactions.c.user_id)
    .where(_reactions.c.chat_id == _chat, _reactions.c.seq.in_(bindparam("seqs", expanding=True)))
    .order_by(_reactions.c.seq, _reactions.c.rev)
)


async def reactions_of(
    session: AsyncSession, chat_id: int, seqs: list[int]
) -> dict[int, dict[str, list[int]]]:
    """For each of these messages that has reactions: emoji, in order of first use, to their people."""
    found: dict[int, dict[str, list[int]]] = {}
    if seqs:
        for seq, emoji, user_id in await session.execute(_REACTIONS, {"chat": chat_id, "seqs": seqs}):
            found.setdefault(seq, {}).setdefault(emoji, []).append(user_id)
    return found


async def last_seq(session: AsyncSession, chat_id: int) -> int:
    return await session.scalar(_LAST_SEQ, {"chat": chat_id}) or 0


async def member_last_seq(session: AsyncSession, chat_id: int, user_id: int) -> int | None:
    seq: int | None = await session.scalar(_MEMBER_LAST_SEQ, {"chat": chat_id, "person": user_id})
    return seq


async def last_rev(session: AsyncSession, chat_id: int) -> int:
    return await session.scalar(_LAST_REV, {"chat": chat_id}) or 0


async def member_position(session: AsyncSession, chat_id: int, user_id: int) -> tuple[int, int] | None:
    """The chat's ``(last_seq, last_rev)`` if the user is a member, else None."""
    row = (await session.execute(_MEMBER_POSITION, {"chat": chat_id, "person": user_id})).one_or_none()
    return None if row is None else (row.last_seq, row.last_rev)


async def all_read_of(session: AsyncSession, chat_id: int) -> int:
    """The chat's all_read_seq: every message up to it has been read by every member."""
    return int(await session.scalar(_ALL_READ, {"chat": chat_id}) or 0)
