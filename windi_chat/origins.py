"""Which web pages may use the server from a browser: the socket's Origin check and CORS for REST.

Browsers always send ``Origin`` on a WebSocket handshake and cannot be made to lie about it, so the
check stops another site's page from opening sockets with a token it got hold of. Native clients send
no ``Origin`` and are not concerned. ``WINDI_ALLOWED_ORIGINS`` lists the allowed origins; when it is
empty, only pages served from the server's own origin are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection

__all__ = ("OriginPolicy", "cors_config", "normalize_origin", "parse_origins")

DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?|\[[0-9a-f:.]+\]")
# Headers a browser page sends to the API besides the CORS-safelisted ones.
CORS_HEADERS = ["Authorization", "Content-Type"]
# Headers of our responses a page may read besides the CORS-safelisted ones.
CORS_EXPOSED_HEADERS = ["Retry-After"]


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` as browsers send it (lower case, no default port), or None if not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = parts.netloc.lower().rpartition(":")[0] if port is not None else parts.netloc.lower()
    if not _HOST.fullmatch(host):
        return None
    return f"{scheme}://{host}" if port in (None, DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def parse_origins(value: str) -> tuple[str, ...]:
    """The comma-separated origins of ``WINDI_ALLOWED_ORIGINS``; a ValueError names a bad one."""
    origins = []
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        origin = normalize_origin(entry)
        if origin is None:
            raise ValueError(
                f"WINDI_ALLOWED_ORIGINS: {entry!r} is not an origin: write scheme://host[:port] "
                "(http or https, no path, no wildcard), separated by commas"
            )
        origins.append(origin)
    return tuple(dict.fromkeys(origins))


def own_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The origin this request was addressed to: its scheme (after uvicorn's proxy headers) and Host."""
    scheme = "https" if connection.scope["scheme"] in ("https", "wss") else "http"
    host = connection.headers.get("host")
    return normalize_origin(f"{scheme}://{host}") if host else None


class OriginPolicy:
    """Whether a handshake's ``Origin`` may open a socket."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self._allowed = frozenset(allowed)

    def allows(self, connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        origin = connection.headers.get("origin")
        if origin is None:
            return True  # not a browser: the token alone decides
        normalized = normalize_origin(origin)
        if normalized is None:  # "null" (sandboxed pages, files) or garbage
            return False
        if self._allowed:
            return normalized in self._allowed
        return normalized == own_origin(connection)


def cors_config(allowed: Iterable[str]) -> CORSConfig:
    """CORS for REST: the allowed origins only (none by default), bearer tokens, no cookies."""
    return CORSConfig(
        allow_origins=list(allowed),
        allow_methods=["*"],
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=False,
    )
