"""The built-in web client: static files under ``windi_chat/web/``, served at ``/``.

Plain HTML, CSS and JavaScript modules, no build step and nothing fetched from elsewhere, so the client
works on a closed network. Every file goes out with a strict Content-Security-Policy: scripts, styles and
connections from this origin only, so a message that slipped into the page as markup could run nothing.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

__all__ = ("CONTENT_SECURITY_POLICY", "WEB_DIRECTORY", "web_client")

WEB_DIRECTORY = Path(__file__).parent / "web"

# 'self' covers same-origin ws: and wss: in current browsers (CSP Level 3); nothing else may load.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _secure(response: Response[object]) -> Response[object]:
    response.headers.update(SECURITY_HEADERS)
    return response


def web_client() -> Router:
    """The client's files at ``/`` (``index.html`` for ``/``), open to everyone: the page holds no data."""
    return create_static_files_router(
        path="/",
        directories=[WEB_DIRECTORY],
        html_mode=True,
        name="web",
        # The files change with the server's version: a browser asks again rather than run stale code.
        cache_control=CacheControlHeader(no_cache=True),
        after_request=_secure,
        opt={"exclude_from_auth": True},
    )
