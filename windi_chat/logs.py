"""Logging: text or JSON lines, and no token ever reaches a log line.

The WebSocket URL carries ``?token=``, and uvicorn logs WebSocket paths with their query string even
with the access log off, so the redaction filter sits on every handler that could print one. At DEBUG
the WebSocket library logs every frame; the filter keeps only their kind and size, so neither message
text nor an in-band token gets through.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import msgspec

__all__ = (
    "JSONFormatter",
    "RedactSecrets",
    "RequestIdFilter",
    "install_redaction",
    "logging_dict",
    "request_id",
)

# The id of the request or socket being served: each is served in its own task, which has its own copy.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# A query parameter: what follows ``?``, ``&`` or ``;`` up to the next separator, space or quote.
# (Only ``&`` separates parameters for our server; ``;`` is covered for proxies that split on it.)
_QUERY_PARAMETER = re.compile(r"([?&;])([^&;\s\"']+)")
# Parameter names whose value is a secret, once fully decoded and lower-cased; ``q`` is a search's words,
# which are message text.
_SECRET_NAME = re.compile(r"(?:[a-z]+_)?token|jwt|password|secret|q")
_JWT_DOT = r"(?:\.|%(?:25)*2[eE])"  # a dot, or a dot percent-encoded once or more
_SECRET_PATTERNS = (
    (re.compile(r"(?i)(bearer\s+)[\w.~+/=-]+"), r"\1[redacted]"),
    # Any JWT-shaped string, wherever it turns up.
    (re.compile(rf"eyJ[\w-]{{4,}}{_JWT_DOT}[\w-]{{4,}}{_JWT_DOT}[\w-]+"), "[redacted]"),
)
MAX_DECODING_ROUNDS = 8
_DATA_OPCODES = frozenset({"TEXT", "BINARY", "CONT"})
PROTECTED_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "windi_chat", "litestar")


def _decoded(text: str) -> str:
    """``text`` percent-decoded until nothing changes, so that ``%2574oken`` reads as ``token``.

    The server decodes a name once; a few more rounds cover names encoded twice or more on purpose,
    and the bound keeps a long, deeply nested name from costing quadratic time on every log line.
    """
    for _ in range(MAX_DECODING_ROUNDS):
        decoded = unquote_plus(text)
        if decoded == text:
            break
        text = decoded
    return text


def _redact_parameter(match: re.Match[str]) -> str:
    """Mask the value of a parameter whose name is a secret's, however its name is encoded.

    The server reads ``?tok%65n=...`` as ``token``, so names are compared decoded. A name that decodes
    to one containing ``=`` (``token%3D...``) hides its value inside it: the whole parameter goes.
    """
    separator, parameter = match.groups()
    raw_name, equals, _ = parameter.partition("=")
    name, hidden_equals, _ = _decoded(raw_name).partition("=")
    if not _SECRET_NAME.fullmatch(name.strip().lower()):
        return match.group(0)
    if equals and not hidden_equals:
        return f"{separator}{raw_name}=[redacted]"
    return f"{separator}[redacted]"


def redact(text: str) -> str:
    text = _QUERY_PARAMETER.sub(_redact_parameter, text)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_argument(argument: object) -> object:
    """A string redacted; a WebSocket data frame reduced to its kind and size; anything else as is.

    The ``websockets`` library logs every frame at DEBUG (``< TEXT '{"type": "send", ...}'``) through
    uvicorn's logger: message text and in-band tokens would reach the log, elided in the middle so that
    no pattern can recognise a token.
    """
    if isinstance(argument, str):
        return redact(argument)
    # Duck-typed: uvicorn may run on another WebSocket library, and logging must not import one.
    kind = getattr(getattr(argument, "opcode", None), "name", None)
    data = getattr(argument, "data", None)
    if kind in _DATA_OPCODES and isinstance(data, bytes | bytearray):
        return f"{kind} [{len(data)} bytes]"
    return argument


class RedactSecrets(logging.Filter):
    """Masks tokens in a record's message and arguments, keeping the arguments' shape.

    uvicorn's access formatter unpacks ``record.args`` as a tuple, so each argument is redacted in
    place rather than the message being pre-formatted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_argument(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters print the cached traceback text, so caching a redacted one covers all of them.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class RequestIdFilter(logging.Filter):
    """Names the request or socket a line was logged for, so one request's lines can be found together."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        record.request_id = current
        record.request_tag = f" [{current}]" if current else ""
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None)
        if current:
            entry["request_id"] = current
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        return msgspec.json.encode(entry).decode()


def logging_dict(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """A ``dictConfig`` for the app and for uvicorn (``uvicorn.run(log_config=...)``)."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": fmt,
        "filters": ["request_id", "redact"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}, "request_id": {"()": RequestIdFilter}},
        "formatters": {
            "text": {"format": "%(asctime)s %(levelname)-7s %(name)s%(request_tag)s: %(message)s"},
            "json": {"()": JSONFormatter},
        },
        "handlers": {"console": handler},
        "loggers": {
            "windi_chat": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "litestar": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["console"], "level": "WARNING"},
    }


def install_redaction() -> None:
    """Put the filter on every handler and logger that could print a URL, however logging was set up.

    Covers uvicorn's default configuration and an operator's own ``--log-config`` alike.
    """
    for name in PROTECTED_LOGGERS:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, RedactSecrets) for f in target.filters):
                target.addFilter(RedactSecrets())
