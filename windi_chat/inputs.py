"""The rules every client input passes, the same for REST and the socket: id ranges, characters, depth.

A value that breaks one is the client's mistake, answered with 400 (404 for a path) or an
``invalid_frame`` error, never a 500 from the database or the decoder that meets it later.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from itertools import accumulate
from typing import Annotated

from litestar.params import PathParameter
from msgspec import Meta

__all__ = (
    "EMOJI_PATTERN",
    "MAX_EMOJI_BYTES",
    "MAX_ID",
    "MAX_JSON_DEPTH",
    "MAX_OFFSET",
    "NAME_PATTERN",
    "NO_CONTROL",
    "SESSION_ID_PATTERN",
    "TEXT_PATTERN",
    "Id",
    "PathId",
    "Seq",
    "SessionId",
    "emoji_problem",
    "has_visible",
    "is_id",
    "json_too_deep",
    "text_problem",
)

# Ids and seqs are BIGINT columns: a larger number names no row, and the database would refuse it.
MAX_ID = 2**63 - 1
# Offset paging past two billion rows is a mistake, not a page: refuse it before it reaches a query.
MAX_OFFSET = 2**31 - 1
# No body or frame of ours nests deeper than 3; the decoder's own limit (the recursion limit) is a 500.
MAX_JSON_DEPTH = 32
# A reaction's emoji, in bytes of UTF-8: a flag or a family of several code points fits.
MAX_EMOJI_BYTES = 32

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Seq = Annotated[int, Meta(ge=0, le=MAX_ID)]
# An id in a path: out of range, it names nothing, which ``http_errors`` answers with 404.
PathId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]

# C0 and C1 control characters, DEL included: nothing a person types, and NUL cannot be stored.
_CONTROLS = r"\x00-\x1f\x7f-\x9f"
# Message text keeps its line breaks and tabs.
_TEXT_CONTROLS = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
# Bidi embeddings, overrides and isolates: they let a name show as another ("evil\u202eeman").
_BIDI = r"\u202a-\u202e\u2066-\u2069"

NO_CONTROL = rf"^[^{_CONTROLS}]*$"
# What emoji sequences are built of: the joiner of a family, the tags of a subdivision's flag.
_ZERO_WIDTH_JOINER = "\u200d"
_TAGS = ("\U000e0020", "\U000e007f")
# A reaction: no whitespace and no control characters (``emoji_problem`` says why one is refused).
EMOJI_PATTERN = rf"^[^\s{_CONTROLS}]+$"
TEXT_PATTERN = rf"^[^{_TEXT_CONTROLS}]*$"
NAME_PATTERN = rf"^[^{_CONTROLS}{_BIDI}]*$"
# A login session's id is ``secrets.token_urlsafe(16)``; anything else names no session.
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
SessionId = Annotated[str, PathParameter(pattern=SESSION_ID_PATTERN)]

_TEXT_CONTROL = re.compile(f"[{_TEXT_CONTROLS}]")
# Letters and symbols that render as nothing: Hangul fillers, the braille blank, variation selectors.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f") | frozenset(map(chr, range(0xFE00, 0xFE10)))
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Zs", "Zl", "Zp"))


def is_id(value: int) -> bool:
    return 1 <= value <= MAX_ID


def _visible(char: str) -> bool:
    return not (
        char.isspace() or char in _BLANK_GLYPHS or unicodedata.category(char) in _INVISIBLE_CATEGORIES
    )


def has_visible(text: str) -> bool:
    """Whether ``text`` shows anything: zero-width spaces, joiners, a BOM and blanks alone do not."""
    return any(map(_visible, text))


def text_problem(text: str) -> str | None:
    """Why a message text cannot be stored, or None."""
    if _TEXT_CONTROL.search(text):
        return "text must not contain control characters other than newline and tab"
    if not has_visible(text):
        return "text must hold a visible character"
    return None


def _refused_in_emoji(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "Cf":
        return not (char == _ZERO_WIDTH_JOINER or _TAGS[0] <= char <= _TAGS[1])
    return char.isspace() or category in ("Cc", "Cs") or char in "/\ufffd"


def emoji_problem(emoji: str) -> str | None:
    """Why a reaction cannot be stored, or None: 1 to 32 bytes of UTF-8, no whitespace or controls.

    Invisible formatting is refused too (a zero-width space or a bidi override would make two reactions
    look alike) except the joiner and tags that emoji sequences are built of; so are ``/``, which no
    REST path segment can carry, and U+FFFD, what undecodable bytes turn into.
    """
    if any(_refused_in_emoji(char) for char in emoji):
        return "an emoji must not contain whitespace, control or invisible characters, '/' or U+FFFD"
    if not 1 <= len(emoji.encode()) <= MAX_EMOJI_BYTES:
        return f"an emoji is 1 to {MAX_EMOJI_BYTES} bytes of UTF-8"
    return None


# Strings are skipped when counting brackets: "[[[" inside a message is text, not nesting.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN_CLOSE = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))


def json_too_deep(raw: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON document nests arrays and objects deeper than ``limit``, without decoding it.

    Cheap for ordinary bodies (fewer brackets than the limit need no scan); linear, in C, otherwise.
    """
    data = raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", data).translate(_OPEN_CLOSE, _NOT_BRACKET)
    return max(accumulate(array("b", brackets)), default=0) > limit
