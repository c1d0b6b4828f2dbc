"""A bare WebSocket broadcast server that speaks the chat's frames: the transport's ceiling (limit b).

No database, no framework, no channels: a ``send`` gets the next seq of its room, an ``ack`` to the
sender and a ``message`` frame to every socket of the room, sent directly. It runs under uvicorn with
the settings of ``windi-chat run``, so the load driver's figures against it bound what the chat server
could reach on the same transport. ``?token=`` carries the user id as plain digits.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import msgspec
import uvicorn

from windi_chat.frames import MAX_FRAME_BYTES, AckFrame, MessageFrame
from windi_chat.logs import logging_dict
from windi_chat.schemas import MessageOut

__all__ = ("app", "main")

Send = Any
_ids = itertools.count(1)


class _SendFrame(msgspec.Struct):
    type: str
    client_id: str = ""
    text: str = ""


class _Room:
    def __init__(self) -> None:
        self.sockets: set[Send] = set()
        self.seq = 0


_rooms: defaultdict[int, _Room] = defaultdict(_Room)
_decode = msgspec.json.Decoder(_SendFrame).decode
_encode = msgspec.json.Encoder().encode


async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"echo"})
    elif scope["type"] == "websocket":
        await _serve_socket(scope, receive, send)


async def _serve_socket(scope: dict[str, Any], receive: Any, send: Send) -> None:
    room_id = int(scope["path"].rstrip("/").rsplit("/", 1)[-1])
    user_id = int(parse_qs(scope["query_string"].decode()).get("token", ["0"])[0])
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    room = _rooms[room_id]
    room.sockets.add(send)
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            frame = _decode(event.get("text") or event.get("bytes") or b"{}")
            if frame.type != "send":
                continue
            room.seq += 1
            message = MessageOut(
                id=next(_ids),
                chat_id=room_id,
                seq=room.seq,
                sender_id=user_id,
                text=frame.text,
                timestamp=datetime.now(UTC),
                client_id=frame.client_id,
                read=False,
                rev=room.seq,
                reply_to=None,
                edited_at=None,
                deleted=False,
                reactions=[],
            )
            await send(
                {
                    "type": "websocket.send",
                    "text": _encode(AckFrame(client_id=frame.client_id, message=message)).decode(),
                }
            )
            text = _encode(MessageFrame(message)).decode()
            for member in list(room.sockets):
                with contextlib.suppress(OSError):  # a member that just left
                    await member({"type": "websocket.send", "text": text})
    finally:
        room.sockets.discard(send)


def main() -> None:
    """Serve the echo app with the uvicorn settings ``windi-chat run`` uses."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=logging_dict("WARNING", "json"),
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        ws_max_size=MAX_FRAME_BYTES,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
