"""A request id for every request and socket: the client's ``X-Request-ID`` when it is usable, else a new one.

It is set for the log lines of the request (:data:`windi_chat.logs.request_id`) and sent back in the
``X-Request-ID`` response header (on a socket, in the handshake's answer), so a client's report and the
server's log lines can be matched.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, cast

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from windi_chat.logs import request_id

__all__ = ("HEADER", "RequestIdMiddleware", "add_request_id_header")

HEADER = "x-request-id"
# Short and printable: it goes into every log line, so no spaces, control characters or long values.
_USABLE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,64}")
_STATE_KEY = "windi_request_id"


def _assign(scope: Scope) -> str:
    """The scope's request id, chosen once, and made the current one for log lines."""
    state = cast("dict[str, Any]", scope).setdefault("state", {})
    current: str | None = state.get(_STATE_KEY)
    if current is None:
        sent = next((value for name, value in scope["headers"] if name == HEADER.encode()), b"")
        text = sent.decode("latin-1")
        current = text if _USABLE.fullmatch(text) else uuid.uuid4().hex
        state[_STATE_KEY] = current
    request_id.set(current)
    return current


class RequestIdMiddleware(ASGIMiddleware):
    """Chooses the id before any handler, middleware or error handler logs a line for the request.

    The id is not reset afterwards: uvicorn serves each request and each socket in a task of its own,
    whose copy of the variable ends with it, and so the error handler's lines still carry it.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        _assign(scope)
        await next_app(scope, receive, send)


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook: every response, errors and unknown paths included, carries the id."""
    if message["type"] in ("http.response.start", "websocket.accept"):
        headers = list(cast("dict[str, Any]", message).get("headers") or [])
        headers.append((HEADER.encode(), _assign(scope).encode()))
        cast("dict[str, Any]", message)["headers"] = headers
