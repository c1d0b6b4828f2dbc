"""The docs work offline, and the AsyncAPI document describes every frame and close code of the socket."""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from litestar.testing import TestClient

from windi_chat import frames as frame_types_module
from windi_chat import sockets
from windi_chat.asyncapi import close_codes, frame_types

ASSET_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def test_the_docs_page_loads_only_local_assets_and_each_answers_200(client: TestClient[Any]) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = ASSET_URL.findall(page.text)
    assert any(url.endswith(".js") for url in urls)
    assert any(url.endswith(".css") for url in urls)
    for url in urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        assert client.get(url).status_code == 200, url


def test_the_docs_page_makes_no_request_to_another_host(client: TestClient[Any]) -> None:
    page = client.get("/docs").text
    assert "http://" not in page
    assert "https://" not in page


def test_a_missing_docs_asset_is_404(client: TestClient[Any]) -> None:
    assert client.get("/docs/assets/no-such-file.js").status_code == 404


@pytest.fixture
def asyncapi(client: TestClient[Any]) -> dict[str, Any]:
    response = client.get("/docs/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def test_the_asyncapi_document_is_valid_asyncapi_3(asyncapi: dict[str, Any]) -> None:
    """CI fetches the specification's JSON Schema from its npm package, @asyncapi/specs."""
    schema_path = os.environ.get("WINDI_ASYNCAPI_SCHEMA")
    if not schema_path:
        if os.environ.get("CI"):
            pytest.fail("WINDI_ASYNCAPI_SCHEMA is not set: .ci/run installs @asyncapi/specs and sets it")
        pytest.skip("WINDI_ASYNCAPI_SCHEMA (the AsyncAPI 3.0.0 JSON Schema from @asyncapi/specs) is not set")
    specification = json.loads(Path(schema_path).read_text())
    assert asyncapi["asyncapi"] == "3.0.0"
    jsonschema.Draft7Validator(specification).validate(asyncapi)


def test_every_frame_type_in_the_frames_module_is_a_client_or_a_server_frame() -> None:
    client_frames, server_frames = frame_types()
    frames = {
        kind
        for name, kind in inspect.getmembers(frame_types_module, inspect.isclass)
        if issubclass(kind, msgspec.Struct) and name.endswith("Frame")
    }
    assert frames == set(client_frames) | set(server_frames)


def test_every_frame_the_server_accepts_or_sends_is_in_the_asyncapi_doc(asyncapi: dict[str, Any]) -> None:
    client_frames, server_frames = frame_types()
    operations = asyncapi["operations"]
    messages = asyncapi["channels"]["chat"]["messages"]
    for action, frames in (("receive", client_frames), ("send", server_frames)):
        (operation,) = [op for op in operations.values() if op["action"] == action]
        listed = {ref["$ref"].rsplit("/", 1)[1] for ref in operation["messages"]}
        assert listed == {frame.__name__ for frame in frames}
        for frame in frames:
            tag = frame.__struct_config__.tag
            assert messages[frame.__name__]["name"] == tag
            schema = asyncapi["components"]["schemas"][frame.__name__]
            assert schema["properties"]["type"]["enum"] == [tag]


def test_the_asyncapi_frame_schemas_come_from_the_server_types(asyncapi: dict[str, Any]) -> None:
    send = asyncapi["components"]["schemas"]["SendFrame"]
    assert send["properties"]["client_id"]["maxLength"] == 64
    assert set(send["required"]) >= {"type", "client_id", "text"}


def test_every_close_code_of_the_socket_is_in_the_asyncapi_document(asyncapi: dict[str, Any]) -> None:
    documented = {entry["code"] for entry in asyncapi["x-close-codes"]}
    constants = {value for name, value in vars(sockets).items() if name.startswith("CLOSE_")}
    assert constants <= documented == close_codes()
    description = asyncapi["channels"]["chat"]["description"]
    assert all(f"| {code} |" in description for code in constants)


def test_the_asyncapi_document_describes_the_token_query_parameter_and_bearer_header(
    asyncapi: dict[str, Any],
) -> None:
    schemes = asyncapi["components"]["securitySchemes"]
    assert {"type": "httpApiKey", "name": "token", "in": "query"}.items() <= schemes["queryToken"].items()
    assert schemes["bearer"]["scheme"] == "bearer"
    assert asyncapi["channels"]["chat"]["address"] == "/ws/{chat_id}"
    assert asyncapi["channels"]["gateway"]["address"] == "/ws"


def test_the_asyncapi_document_names_the_host_it_was_asked_on(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["servers"]["chat"]["host"] == "testserver.local"
    assert asyncapi["servers"]["chat"]["protocol"] == "ws"


def test_the_openapi_messages_tag_links_to_the_asyncapi_document(client: TestClient[Any]) -> None:
    tags = {tag["name"]: tag for tag in client.get("/docs/openapi.json").json()["tags"]}
    assert "/docs/asyncapi.json" in tags["messages"]["description"]
