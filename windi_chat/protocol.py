"""The chat socket's wire rules: reading a handshake and a client frame, and the answer each error gets.

Kept apart from the socket's loops so that every way a frame or an action can fail is answered from
one table, the same for each new frame type.
"""

from __future__ import annotations

import logging
from typing import get_args

import msgspec

from windi_chat.database import unavailable_cause
from windi_chat.errors import (
    ChatNotFoundError,
    ConflictError,
    DomainError,
    InvalidError,
    NotAllowedError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    answer_for,
)
from windi_chat.frames import ClientFrame, ErrorFrame, GatewayFrame
from windi_chat.inputs import MAX_JSON_DEPTH, is_id, json_too_deep
from windi_chat.sockets import CLOSE_FORBIDDEN, CLOSE_TRY_AGAIN, CLOSE_UNAUTHORIZED

__all__ = (
    "CLOSE_CODES",
    "FRAME_ERROR_CODES",
    "close_code",
    "decode_client_frame",
    "encode",
    "error_frame",
    "warn_if_unavailable",
)

logger = logging.getLogger("windi_chat.realtime")

# How an action's error answers a client frame: an error frame with this code, found by the error's
# kind. Losing access to the chat is the exception: it closes the socket (``close_code``).
FRAME_ERROR_CODES: dict[type[DomainError], str] = {
    InvalidError: "invalid_frame",
    UnauthenticatedError: "unauthenticated",
    NotFoundError: "not_found",
    NotAllowedError: "forbidden",
    ConflictError: "conflict",
    UnavailableError: "unavailable",
    RateLimitedError: "rate_limited",
}
# How an error ends a socket: on the handshake, in catch-up, when a frame finds the chat gone, or when
# the socket's session or token ends.
CLOSE_CODES: dict[type[DomainError], int] = {
    ChatNotFoundError: CLOSE_FORBIDDEN,
    UnauthenticatedError: CLOSE_UNAUTHORIZED,
    UnavailableError: CLOSE_TRY_AGAIN,
}

# A tuple, not a set: a client's "type" may be any JSON value, lists included, and those cannot be hashed.
FRAME_TYPES = tuple(str(kind.__struct_config__.tag) for kind in get_args(GatewayFrame))

# How much of an unknown frame type an error frame repeats.
MAX_SHOWN_TYPE = 64

_decode = msgspec.json.Decoder(ClientFrame).decode
_decode_gateway = msgspec.json.Decoder(GatewayFrame).decode
_encoder = msgspec.json.Encoder()


def encode(frame: msgspec.Struct) -> str:
    return _encoder.encode(frame).decode()


def close_code(error: DomainError) -> int:
    return answer_for(type(error), CLOSE_CODES, CLOSE_TRY_AGAIN)


def error_frame(error: DomainError, client_id: str | None = None, chat_id: int | None = None) -> ErrorFrame:
    return ErrorFrame(
        code=answer_for(type(error), FRAME_ERROR_CODES, "invalid_frame"),
        detail=error.detail,
        client_id=client_id,
        chat_id=chat_id,
    )


def decode_client_frame(raw: str | bytes, *, gateway: bool = False) -> GatewayFrame | ErrorFrame:
    """The frame, or the error frame that tells the client what is wrong with it.

    Only the gateway (``/ws``) knows the ``sync`` frame; the chat socket answers it as an unknown type.
    """
    if json_too_deep(raw):  # before msgspec, whose limit is the recursion limit, raised as RecursionError
        return ErrorFrame(code="invalid_frame", detail=f"Frames nest at most {MAX_JSON_DEPTH} levels deep")
    not_json = ErrorFrame(code="invalid_json", detail="Frames must be JSON objects")
    try:
        return _decode_gateway(raw) if gateway else _decode(raw)
    except msgspec.ValidationError as exc:  # not a frame, and perhaps not JSON either
        problem = str(exc)
    except msgspec.DecodeError:
        return not_json
    # The typed decoder stops at the first wrong type, so "not a frame" may still be broken JSON.
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return not_json
    kind = value.get("type") if isinstance(value, dict) else None
    if kind is None:
        return ErrorFrame(code="invalid_frame", detail="A frame is a JSON object with a type")
    client_id = value.get("client_id")
    client_id = client_id if isinstance(client_id, str) else None
    if kind not in FRAME_TYPES or (kind == "sync" and not gateway):
        shown = repr(kind)[:MAX_SHOWN_TYPE]  # the answer does not echo a whole frame back
        return ErrorFrame(code="unknown_type", detail=f"Unknown frame type: {shown}", client_id=client_id)
    # On the gateway, an error answering a chat's frame names the chat, when the frame named a valid one.
    chat_id = value.get("chat_id") if gateway else None
    chat_id = (
        chat_id if isinstance(chat_id, int) and not isinstance(chat_id, bool) and is_id(chat_id) else None
    )
    return ErrorFrame(code="invalid_frame", detail=problem, client_id=client_id, chat_id=chat_id)


# What a failed handshake or frame logs ---------------------------------------------------------------


def warn_if_unavailable(error: DomainError, where: str) -> None:
    """One WARNING line, no traceback: an unreachable database is an operator's concern, not a bug."""
    if isinstance(error, UnavailableError):
        logger.warning("Unavailable (%s): %s", where, unavailable_cause(error))
