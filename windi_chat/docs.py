"""The API docs at ``/docs``, served entirely by this server: no request leaves it.

Swagger UI's scripts and styles come from the ``swagger-ui-bundle-v2`` package and are served as static
files, so the docs work on a closed network. ``/docs/asyncapi.json`` describes the chat socket.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Tag
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from windi_chat import __version__
from windi_chat.asyncapi import asyncapi_document

__all__ = ("ASSETS_PATH", "asyncapi", "docs_assets", "openapi_config")

ASSETS_PATH = "/docs/assets"
ASYNCAPI_PATH = "/docs/asyncapi.json"


def docs_assets() -> Router:
    """Swagger UI's files, as installed with the package."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_ui_path],
        name="docs_assets",
        include_in_schema=False,
        opt={"exclude_from_auth": True},
    )


@get(ASYNCAPI_PATH, include_in_schema=False, media_type="application/json", sync_to_thread=False)
def asyncapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``/ws/{chat_id}``, naming the host and scheme it was asked on."""
    secure = request.url.scheme in ("https", "wss")
    return asyncapi_document(host=request.url.netloc, protocol="wss" if secure else "ws")


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="WinDI Chat",
        version=__version__,
        description="A real-time messenger: REST for accounts, chats and history; a WebSocket per chat.",
        path="/docs",
        render_plugins=[
            SwaggerRenderPlugin(
                path="/",
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
            )
        ],
        tags=[
            Tag(name="accounts", description="Register, log in and out, sessions, find people"),
            Tag(name="chats", description="Private chats, groups and membership"),
            Tag(
                name="messages",
                description="Sending, read markers and history. Live: the WebSocket `/ws/{chat_id}`, "
                f"described by the AsyncAPI document at [{ASYNCAPI_PATH}]({ASYNCAPI_PATH}).",
            ),
            Tag(name="service", description="Health and readiness"),
        ],
    )
