"""The AsyncAPI 3.0 document of the chat socket, built from the frame types the server itself uses.

Every frame's schema comes from its msgspec type (``msgspec.json.schema_components``), and the close
codes from the ``CLOSE_*`` constants the socket closes with, so the document cannot drift from the code.
Operations are written from the server's side, as AsyncAPI wants: the server *receives* client frames
and *sends* server frames.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from windi_chat import __version__, sockets
from windi_chat.frames import GatewayFrame, ServerFrame

__all__ = ("CLOSE_MEANINGS", "asyncapi_document", "close_codes", "frame_types")

# What each close code tells a client (docs/protocol.md has the longer story). 4500 is Litestar's close
# for an unexpected server error; the rest are the ``CLOSE_*`` constants of ``windi_chat.sockets``.
CLOSE_MEANINGS: dict[int, str] = {
    1001: "The server is shutting down: reconnect (to any server) with after_seq.",
    1008: "Flooding: frames or sends kept coming after rate_limited errors. Slow down, then reconnect.",
    1009: "A frame over 65,536 bytes. Send smaller frames.",
    1013: "Too far behind, or the database is unavailable: reconnect with after_seq, backing off.",
    4400: "A bad query parameter (after_seq or after_rev not an integer from 0 to 2^63-1, or both given). "
    "Fix the request.",
    4401: "Token missing, invalid or expired, or the session ended: get a new access token, reconnect.",
    4403: "The chat does not exist, you are not a member or were removed, or the origin is not allowed.",
    4429: "Too many connections: the person holds WINDI_WS_MAX_SOCKETS_PER_USER sockets on this process.",
    4500: "An unexpected server error: reconnect with after_seq, backing off.",
}

SCHEMA_REF = "#/components/schemas/{name}"


def close_codes() -> set[int]:
    """Every close code the socket code names."""
    return {value for name, value in vars(sockets).items() if name.startswith("CLOSE_")} | {4500}


def frame_types() -> tuple[tuple[type[msgspec.Struct], ...], tuple[type[msgspec.Struct], ...]]:
    """The client frames and the server frames, from the unions the socket decodes and encodes."""
    return get_args(GatewayFrame), get_args(ServerFrame)


def _tag(frame: type[msgspec.Struct]) -> str:
    return str(frame.__struct_config__.tag)


def _message(frame: type[msgspec.Struct], direction: str) -> dict[str, Any]:
    summary = (frame.__doc__ or "").strip().splitlines()
    return {
        "name": _tag(frame),
        "title": f"{_tag(frame)} ({direction})",
        "summary": summary[0] if summary else f"The {_tag(frame)} frame ({direction}).",
        "contentType": "application/json",
        "payload": {"$ref": SCHEMA_REF.format(name=frame.__name__)},
    }


def _close_code_table() -> str:
    rows = "\n".join(f"| {code} | {CLOSE_MEANINGS[code]} |" for code in sorted(close_codes()))
    return f"Close codes:\n\n| code | meaning and what to do |\n|---|---|\n{rows}"


def asyncapi_document(host: str = "localhost:8000", protocol: str = "ws") -> dict[str, Any]:
    """The whole document; ``host`` and ``protocol`` name the server it is served from."""
    client_frames, server_frames = frame_types()
    _, schemas = msgspec.json.schema_components((*client_frames, *server_frames), ref_template=SCHEMA_REF)
    messages = {
        **{frame.__name__: _message(frame, "client to server") for frame in client_frames},
        **{frame.__name__: _message(frame, "server to client") for frame in server_frames},
    }

    def refs(frames: tuple[type[msgspec.Struct], ...]) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/chat/messages/{frame.__name__}"} for frame in frames]

    gateway_messages = {name: {"$ref": f"#/channels/chat/messages/{name}"} for name in messages}

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "WinDI Chat live protocol",
            "version": __version__,
            "description": "One WebSocket per open chat: live messages, acknowledgements, read receipts, "
            "typing and membership. Frames are JSON objects with a `type`. REST is described at "
            "`/docs/openapi.json`; the reconnect procedure in docs/protocol.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "chat": {
                "host": host,
                "protocol": protocol,
                "description": "The chat server; behind TLS, use wss.",
                "security": [
                    {"$ref": "#/components/securitySchemes/queryToken"},
                    {"$ref": "#/components/securitySchemes/bearer"},
                ],
            }
        },
        "channels": {
            "chat": {
                "address": "/ws/{chat_id}",
                "title": "A chat's socket",
                "description": "Opened with an access token, as `?token=` or an `Authorization: Bearer` "
                "header. The handshake always completes; a refusal is a close code. `after_seq=N` asks "
                "for every message after N before live events; `after_rev=N` (instead) for every message "
                "changed after rev N, each once in its current state. A newer token of the same person "
                "renews the socket in-band with an `auth` frame.\n\n" + _close_code_table(),
                "parameters": {"chat_id": {"description": "The chat's id; the caller must be a member."}},
                "messages": messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {"type": "string", "description": "An access token."},
                                "after_seq": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "Catch up from after this seq first.",
                                },
                                "after_rev": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "Catch up on every change after this rev first "
                                    "(not with after_seq).",
                                },
                            },
                        },
                    }
                },
            },
            "gateway": {
                "address": "/ws",
                "title": "A device's gateway",
                "description": "One socket for every chat the person is in, opened like a chat's socket. "
                "It carries the same frames; each names its `chat_id`, and so must the client's (but "
                "`auth`). The first client frame may be `sync` (`chats`: chat id to after_seq): replays "
                "for the chats named, `chat_added` for the others, `chat_removed` for named chats the "
                "person left. `chat_added` and `chat_removed` keep the inbox live; `message` frames "
                "carry the person's `unread_count`. A frame for a chat the person is not in gets an "
                "error frame; the gateway stays open. While live delivery is down it is refused (or "
                "closed) with 1013.",
                "messages": gateway_messages,
            },
        },
        "operations": {
            "receiveClientFrames": {
                "action": "receive",
                "channel": {"$ref": "#/channels/chat"},
                "summary": "Frames a client sends: send, read, typing, auth (and sync, on the gateway).",
                "messages": refs(client_frames),
            },
            "sendServerFrames": {
                "action": "send",
                "channel": {"$ref": "#/channels/chat"},
                "summary": "Frames the server sends: events of the chat and answers to the client's frames.",
                "messages": refs(server_frames),
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "queryToken": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The access token from POST /login or POST /token/refresh.",
                },
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "x-close-codes": [{"code": code, "meaning": CLOSE_MEANINGS[code]} for code in sorted(close_codes())],
    }
