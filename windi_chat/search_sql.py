"""The SQL of message search: one statement per database, each answered from its full-text index.

Both statements take the newest matches in the caller's chats first (at most ``candidates`` of them)
and rank only those: ranking every match of a common word would read all of them. The full-text index
itself is made by migration 0007.

PostgreSQL: the match repeats the index's expression, ``to_tsvector('simple', text)``, so the planner
answers it from the GIN index (reading each match's row for its id and chat); for a very common word it
walks the primary key backwards instead, testing each row, and stops after ``candidates`` matches. The
dearest words are those in between (about 1% of the messages): every match is read. Across chats,
membership is checked per match (``chat_id + 0`` keeps the planner from intersecting the matches with
each chat's rows through the (chat_id, ...) indexes, which costs more than reading the matches); in one
chat, its (chat_id, seq) index gives the newest first. The query's words are bound, never spliced in.

SQLite: FTS5 gives the matches newest first (by its rowid, which is the message id, so no sort of all
the matches); ``bm25`` ranks them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, Integer, Row, String, bindparam, column, select, text, tuple_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.errors import SearchBusyError
from windi_chat.models import metadata

if TYPE_CHECKING:
    from windi_chat.search import Query

__all__ = ("PG_SEARCH", "SQLITE_SEARCH", "Reactions", "is_member", "reactions_of", "search")

_messages, _reactions = metadata.tables["messages"], metadata.tables["message_reactions"]
# The result has the columns of ``messages``, named and typed as the table's (timestamps come back as
# datetimes on SQLite too), and the chat's all_read_seq.
_COLUMNS = (*_messages.c, column("all_read_seq", BigInteger))
_SELECTED = ", ".join(f"c.{col.name}" for col in _messages.c)
_PARAMETERS = (
    bindparam("q", type_=String),
    bindparam("person", type_=BigInteger),
    bindparam("candidates", type_=Integer),
    bindparam("limit", type_=Integer),
)
# Every member has read up to here: the same rule as history's ``all_read_seq``, per result row.
_ALL_READ = "(SELECT coalesce(min(r.read_seq), 0) FROM chat_members r WHERE r.chat_id = c.chat_id)"
# Each result's reactions as ``[[emoji, [user ids]], ...]``, in order of first use, so PostgreSQL needs
# no second round trip for them (SQLite, in process, reads them with a second query).
_PG_REACTIONS = """(
    SELECT json_agg(json_build_array(e.emoji, e.people) ORDER BY e.first_rev) FROM (
        SELECT r.emoji, json_agg(r.user_id ORDER BY r.rev) AS people, min(r.rev) AS first_rev
        FROM message_reactions r WHERE r.chat_id = c.chat_id AND r.seq = c.seq GROUP BY r.emoji
    ) e)"""
_PG_MATCH = "to_tsvector('simple', m.text) @@ websearch_to_tsquery('simple', :q)"
_PG_RANK = "ts_rank(to_tsvector('simple', c.text), websearch_to_tsquery('simple', :q))"


def _pg(in_chat: bool) -> str:
    # In one chat, its (chat_id, seq) index gives the newest first; across chats the primary key does.
    where = "m.chat_id = :chat AND" if in_chat else ""
    member = ":chat" if in_chat else "m.chat_id + 0"
    newest = "m.seq DESC" if in_chat else "m.id DESC"
    return f"""
        SELECT {_SELECTED}, {_ALL_READ} AS all_read_seq, {_PG_REACTIONS} AS reactions FROM (
            SELECT m.* FROM messages m
            WHERE {where} {_PG_MATCH} AND NOT m.deleted
              AND EXISTS (SELECT FROM chat_members cm WHERE cm.chat_id = {member} AND cm.user_id = :person)
            ORDER BY {newest} LIMIT :candidates
        ) c
        ORDER BY {_PG_RANK} DESC, c.id DESC
        LIMIT :limit"""  # noqa: S608 - fixed fragments; every value is bound


def _sqlite(in_chat: bool) -> str:
    where = "AND m.chat_id = :chat" if in_chat else ""
    return f"""
        SELECT {_SELECTED}, {_ALL_READ} AS all_read_seq FROM (
            SELECT m.*, bm25(messages_fts) AS score
            FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
            WHERE messages_fts MATCH :q AND NOT m.deleted {where}
              AND m.chat_id IN (SELECT cm.chat_id FROM chat_members cm WHERE cm.user_id = :person)
            ORDER BY messages_fts.rowid DESC LIMIT :candidates
        ) c
        ORDER BY c.score, c.id DESC
        LIMIT :limit"""  # noqa: S608 - fixed fragments; every value is bound


def _statement(sql: str, in_chat: bool, *extra: Any) -> Any:
    parameters = (*_PARAMETERS, bindparam("chat", type_=BigInteger)) if in_chat else _PARAMETERS
    return text(sql).bindparams(*parameters).columns(*_COLUMNS, *extra)


PG_SEARCH = {
    in_chat: _statement(_pg(in_chat), in_chat, column("reactions", JSON)) for in_chat in (False, True)
}
SQLITE_SEARCH = {in_chat: _statement(_sqlite(in_chat), in_chat) for in_chat in (False, True)}
# A result's reactions: emoji, in order of first use, to their people.
Reactions = dict[str, list[int]]
# The plan must fit the words searched for (a rare word: the GIN index; a common one: the newest rows),
# so PostgreSQL plans each search for its own query rather than once for every query; and one search
# does not take the parallel workers a scan would.
# A search also stops at its time limit (``statement_timeout``, for this transaction only).
_PG_PLAN_PER_QUERY = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
    "set_config('max_parallel_workers_per_gather', '0', true), "
    "set_config('statement_timeout', :timeout, true)"
).bindparams(bindparam("timeout", type_=String))
_QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement stopped by its timeout
_IS_MEMBER = text("SELECT 1 FROM chat_members WHERE chat_id = :chat AND user_id = :person").bindparams(
    bindparam("chat", type_=BigInteger), bindparam("person", type_=BigInteger)
)


async def search(
    session: AsyncSession,
    query: Query,
    user_id: int,
    chat_id: int | None,
    limit: int,
    candidates: int,
    time_limit: float,
) -> list[tuple[Row[Any], Reactions]]:
    """Matching messages of the caller's chats, best first: rows of ``messages`` with ``all_read_seq``,
    each with its reactions. On PostgreSQL a search past ``time_limit`` seconds is :class:`SearchBusyError`.
    """
    parameters: dict[str, Any] = {"person": user_id, "candidates": candidates, "limit": limit}
    if chat_id is not None:
        parameters["chat"] = chat_id
    if session.get_bind().dialect.name == "sqlite":
        parameters["q"] = query.fts5()
        rows = (await session.execute(SQLITE_SEARCH[chat_id is not None], parameters)).all()
        reactions = await reactions_of(session, [(row.chat_id, row.seq) for row in rows])
        return [(row, reactions.get((row.chat_id, row.seq), {})) for row in rows]
    await session.execute(_PG_PLAN_PER_QUERY, {"timeout": f"{max(round(time_limit * 1000), 1)}ms"})
    parameters["q"] = query.websearch()
    try:
        rows = (await session.execute(PG_SEARCH[chat_id is not None], parameters)).all()
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) == _QUERY_CANCELED:
            raise SearchBusyError from None
        raise
    return [(row, dict(row.reactions or ())) for row in rows]


async def is_member(session: AsyncSession, chat_id: int, user_id: int) -> bool:
    return await session.scalar(_IS_MEMBER, {"chat": chat_id, "person": user_id}) is not None


async def reactions_of(
    session: AsyncSession, places: list[tuple[int, int]]
) -> dict[tuple[int, int], Reactions]:
    """For each of these messages (chat, seq) that has reactions, its reactions: one query for results
    from many chats, where history's is per chat."""
    found: dict[tuple[int, int], Reactions] = {}
    if places:
        statement = (
            select(_reactions.c.chat_id, _reactions.c.seq, _reactions.c.emoji, _reactions.c.user_id)
            .where(tuple_(_reactions.c.chat_id, _reactions.c.seq).in_(places))
            .order_by(_reactions.c.chat_id, _reactions.c.seq, _reactions.c.rev)
        )
        for chat_id, seq, emoji, user_id in await session.execute(statement):
            found.setdefault((chat_id, seq), {}).setdefault(emoji, []).append(user_id)
    return found
