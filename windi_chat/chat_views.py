"""How a member sees chats: the inbox, a page at a time, and one chat, each in two queries.

The first query reads a page of the viewer's chats with their marker and each chat's last message; the
second reads the members of those chats, so a page costs the same however big its groups are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from windi_chat.inbox import InboxCursor
from windi_chat.messaging import message_out
from windi_chat.models import Chat, ChatMember, ChatType, Message, User
from windi_chat.schemas import ChatOut, MemberOut

__all__ = (
    "INBOX_MEMBERS",
    "OnlineCheck",
    "chat_out",
    "chat_views",
    "inbox_page",
    "members_of",
    "memberships",
    "nobody_online",
)

# Members a group shows in the inbox: enough to draw it, and a page stays small however big its groups.
INBOX_MEMBERS = 20

OnlineCheck = Callable[[int], bool]
"""Whether a person is online (``Presence.is_online``): it lives in memory, not in the database."""

# A member as the views list them: the membership row, the person's name, when they were last seen.
Listed = tuple[ChatMember, str, datetime | None]


def nobody_online(_user_id: int) -> bool:
    """Where no gateway can be open (the command line, tests of the views alone)."""
    return False


async def chat_views(
    session: AsyncSession,
    viewer_id: int,
    chat_id: int | None = None,
    *,
    chat_ids: Collection[int] | None = None,
    limit: int | None = None,
    before: InboxCursor | None = None,
    member_limit: int | None = None,
    online: OnlineCheck = nobody_online,
) -> list[tuple[Chat, ChatOut]]:
    """The viewer's chats (or one of them), most recent activity first, in two queries.

    One query reads a page of chats with the viewer's marker and each chat's last message; the other
    reads the first ``member_limit`` members of each (all when None), with each chat's member count
    and lowest read marker, so a page costs the same whatever the size of its groups.
    """
    mine = aliased(ChatMember)
    last = aliased(Message)
    statement = (
        select(Chat, mine.read_seq, last)
        .join(mine, and_(mine.chat_id == Chat.id, mine.user_id == viewer_id))
        .outerjoin(last, and_(last.chat_id == Chat.id, last.seq == Chat.last_seq))
        .order_by(Chat.last_activity_at.desc(), Chat.id.desc())
    )
    if chat_id is not None:
        statement = statement.where(Chat.id == chat_id)
    if chat_ids is not None:
        statement = statement.where(Chat.id.in_(chat_ids))
    if before is not None:
        statement = statement.where(
            or_(
                Chat.last_activity_at < before.last_activity_at,
                and_(Chat.last_activity_at == before.last_activity_at, Chat.id < before.chat_id),
            )
        )
    if limit is not None:
        statement = statement.limit(limit)
    rows = (await session.execute(statement)).all()
    if not rows:
        return []
    members = await members_of(session, [chat.id for chat, _, _ in rows], member_limit)
    return [
        (chat, chat_out(chat, viewer_id, my_read_seq, last_message, *members[chat.id], online=online))
        for chat, my_read_seq, last_message in rows
    ]


async def inbox_page(
    session: AsyncSession,
    viewer_id: int,
    limit: int,
    before: InboxCursor | None,
    online: OnlineCheck = nobody_online,
) -> tuple[list[ChatOut], InboxCursor | None]:
    """A page of the viewer's chats, and the cursor of the next page when there is one."""
    page = await chat_views(
        session, viewer_id, limit=limit + 1, before=before, member_limit=INBOX_MEMBERS, online=online
    )
    chats = [view for _, view in page[:limit]]
    if len(page) <= limit:
        return chats, None
    last_chat = page[limit - 1][0]
    return chats, InboxCursor(last_chat.last_activity_at, last_chat.id)


async def memberships(session: AsyncSession, user_id: int) -> dict[int, tuple[int, int]]:
    """Every chat the person is in: chat id -> (their read marker, the chat's last seq), in one query."""
    statement = (
        select(ChatMember.chat_id, ChatMember.read_seq, Chat.last_seq)
        .join(Chat, Chat.id == ChatMember.chat_id)
        .where(ChatMember.user_id == user_id)
    )
    return {chat_id: (read_seq, last_seq) for chat_id, read_seq, last_seq in await session.execute(statement)}


async def members_of(
    session: AsyncSession, chat_ids: list[int], member_limit: int | None
) -> dict[int, tuple[list[Listed], int, int | None]]:
    """Per chat: its first ``member_limit`` members (name, last seen), its member count, its lowest marker."""
    order = (ChatMember.joined_at, ChatMember.user_id)
    ranked = select(
        ChatMember.chat_id.label("chat_id"),
        ChatMember.user_id.label("user_id"),
        func.row_number().over(partition_by=ChatMember.chat_id, order_by=order).label("rank"),
        func.count().over(partition_by=ChatMember.chat_id).label("count"),
        func.min(ChatMember.read_seq).over(partition_by=ChatMember.chat_id).label("all_read_seq"),
    ).where(ChatMember.chat_id.in_(chat_ids))
    ranked_sq = ranked.subquery()
    statement = (
        _members_with_names()
        .add_columns(ranked_sq.c.count, ranked_sq.c.all_read_seq)
        .join(
            ranked_sq,
            and_(ranked_sq.c.chat_id == ChatMember.chat_id, ranked_sq.c.user_id == ChatMember.user_id),
        )
    )
    if member_limit is not None:
        statement = statement.where(ranked_sq.c.rank <= member_limit)
    members: dict[int, tuple[list[Listed], int, int | None]] = defaultdict(lambda: ([], 0, None))
    for member, name, last_seen, count, all_read_seq in await session.execute(statement):
        listed = members[member.chat_id][0]
        listed.append((member, name, last_seen))
        members[member.chat_id] = (listed, count, all_read_seq)
    return members


def _members_with_names() -> Select[ChatMember, str, datetime | None]:
    """Members with their names, in the order a chat lists them: by chat, then who joined first."""
    return (
        select(ChatMember, User.name, User.last_seen_at)
        .join(User, User.id == ChatMember.user_id)
        .order_by(ChatMember.chat_id, ChatMember.joined_at, ChatMember.user_id)
    )


def chat_out(
    chat: Chat,
    viewer_id: int,
    my_read_seq: int,
    last: Message | None,
    members: list[Listed],
    member_count: int,
    all_read_seq: int | None,
    online: OnlineCheck = nobody_online,
) -> ChatOut:
    if all_read_seq is None:  # no members left
        all_read_seq = chat.last_seq
    name = chat.name
    if chat.type == ChatType.PRIVATE:
        name = next((n for m, n, _ in members if m.user_id != viewer_id), None)
    return ChatOut(
        id=chat.id,
        type=chat.type,
        name=name,
        created_at=chat.created_at,
        creator_id=chat.creator_id,
        members=[
            MemberOut(
                user_id=m.user_id,
                name=n,
                role=m.role,
                joined_at=m.joined_at,
                online=online(m.user_id),
                last_seen=last_seen,
            )
            for m, n, last_seen in members
        ],
        member_count=member_count,
        last_message=message_out(last, all_read_seq) if last is not None else None,
        unread_count=max(0, chat.last_seq - my_read_seq),
    )
