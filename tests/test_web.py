"""The web client's files at ``/``: served from the package, with a strict policy, beside the API."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from windi_chat.web import WEB_DIRECTORY


def test_the_client_is_served_at_the_root_with_a_strict_policy(client: TestClient[Any]) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/js/app.js">' in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert "connect-src 'self'" in policy
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_every_module_of_the_client_is_served_as_javascript(client: TestClient[Any]) -> None:
    modules = sorted(path.name for path in (WEB_DIRECTORY / "js").glob("*.js"))
    assert "app.js" in modules
    for name in modules:
        response = client.get(f"/js/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/javascript"), name
        assert "content-security-policy" in response.headers


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for path in WEB_DIRECTORY.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path
            assert "https://" not in text, path
            assert "innerHTML" not in text, path


def test_the_api_and_its_docs_still_answer_beside_the_client(client: TestClient[Any]) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/chats").status_code == 401
    assert client.get("/no-such-file.js").status_code == 404
    assert client.get("/js/../../web.py").status_code == 404
