"""Message search: what a query means, and the action that answers it from the caller's chats.

A query reads like a web search: words must all appear (in any order), ``"quoted words"`` must appear
together in that order, ``-word`` must not appear, and ``or`` between terms offers alternatives. It is
parsed here, once, and handed to each database in a form that cannot fail to parse: PostgreSQL gets a
normalised string for ``websearch_to_tsquery``, SQLite an FTS5 expression of quoted strings.

An alternative made only of exclusions is dropped: "everything but X" is not a search, and it would
read the whole index. A query left with nothing to look for matches nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat import search_sql
from windi_chat.errors import ChatNotFoundError, InvalidSearchError, SearchBusyError
from windi_chat.messaging import message_out
from windi_chat.schemas import MessageOut, ReactionOut

__all__ = ("MAX_RESULTS", "Query", "SearchSlots", "Term", "parse_query", "search_messages")

MAX_RESULTS = 50
# Tab and line breaks are whitespace in a query; every other control character is refused, NUL first
# (PostgreSQL cannot take it in a string).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A term or phrase is kept only if it holds something a tokenizer indexes: a letter or a digit.
_INDEXABLE = re.compile(r"[^\W_]")


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear together, in this order (one word is the usual case)."""

    text: str
    excluded: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """Alternatives (``or``), each a list of terms that must all hold."""

    alternatives: tuple[tuple[Term, ...], ...]

    def __bool__(self) -> bool:
        return bool(self.alternatives)

    def websearch(self) -> str:
        """The query for PostgreSQL's ``websearch_to_tsquery``: every term quoted, nothing left to guess."""
        return " or ".join(
            " ".join(f'{"-" if term.excluded else ""}"{term.text}"' for term in terms)
            for terms in self.alternatives
        )

    def fts5(self) -> str:
        """The query for SQLite FTS5: quoted strings only, so no word is ever taken as an operator."""
        groups = []
        for terms in self.alternatives:
            wanted = " AND ".join(_fts5_string(term.text) for term in terms if not term.excluded)
            unwanted = " OR ".join(_fts5_string(term.text) for term in terms if term.excluded)
            groups.append(f"({wanted})" + (f" NOT ({unwanted})" if unwanted else ""))
        return " OR ".join(groups)


def _fts5_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _terms(q: str) -> list[Term | None]:
    """Split the way ``websearch_to_tsquery`` does: quotes make a phrase (an unclosed one runs to the
    end), a leading ``-`` excludes, a bare ``or`` separates alternatives (None here).
    """
    found: list[Term | None] = []
    position, length = 0, len(q)
    while position < length:
        if q[position].isspace():
            position += 1
            continue
        excluded = q[position] == "-"
        if excluded:
            position += 1
        quoted = position < length and q[position] == '"'
        if quoted:
            end = q.find('"', position + 1)
            end = length if end < 0 else end
            text, position = q[position + 1 : end], end + 1
        else:
            end = position
            while end < length and not q[end].isspace() and q[end] != '"':
                end += 1
            text, position = q[position:end], end
        if not (excluded or quoted) and text.lower() == "or":
            found.append(None)
        elif _INDEXABLE.search(text):
            found.append(Term(" ".join(text.split()), excluded))
    return found


def parse_query(q: str, max_length: int) -> Query:
    """The query's alternatives; :class:`InvalidSearchError` for an empty, overlong or unprintable one."""
    if not q.strip():
        raise InvalidSearchError("q must hold something to search for")
    if len(q) > max_length:
        raise InvalidSearchError(f"q must hold at most {max_length} characters")
    if _CONTROL.search(q):
        raise InvalidSearchError("q must not contain control characters")
    alternatives: list[tuple[Term, ...]] = []
    current: list[Term] = []
    for term in [*_terms(q), None]:
        if term is not None:
            current.append(term)
            continue
        if any(not kept.excluded for kept in current):
            alternatives.append(tuple(current))
        current = []
    return Query(tuple(alternatives))


class SearchSlots:
    """How many searches the process runs at once: each holds a database connection while it reads an
    index, and a burst of broad searches must not leave none for sends."""

    def __init__(self, slots: int, wait: float) -> None:
        self._semaphore = asyncio.Semaphore(slots)
        self._wait = wait

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot, waiting at most ``wait`` seconds for one; :class:`SearchBusyError` if none frees."""
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self._wait)
        except TimeoutError:
            raise SearchBusyError from None
        try:
            yield
        finally:
            self._semaphore.release()


async def search_messages(
    session: AsyncSession,
    user_id: int,
    q: str,
    *,
    limit: int,
    max_query_length: int,
    candidates: int,
    time_limit: float,
    chat_id: int | None = None,
) -> list[MessageOut]:
    """The caller's messages that match ``q``: most relevant first, newest first among equals.

    Only the newest ``candidates`` matches (at least ``limit``) are ranked: the index finds matches,
    not the most relevant ones, and ranking every message of a common word would read them all.
    Deleted messages and chats the caller has left are never searched. A ``chat_id`` the caller is not
    in is :class:`ChatNotFoundError`, as on every chat route.
    """
    query = parse_query(q, max_query_length)
    found = []
    if query:
        found = await search_sql.search(
            session, query, user_id, chat_id, limit, max(candidates, limit), time_limit
        )
    if not found and chat_id is not None and not await search_sql.is_member(session, chat_id, user_id):
        raise ChatNotFoundError
    return [
        message_out(
            row, row.all_read_seq, [ReactionOut(emoji, people) for emoji, people in reactions.items()]
        )
        for row, reactions in found
    ]
