"""``/health/ready``: ready only while the database answers and live delivery works."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import TestClient
from sqlalchemy import make_url

from tests.conftest import LiveServer, make_settings, start_server, stop_server, wait_for
from tests.test_service import CuttableLink
from windi_chat.app import create_app

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def test_ready_when_the_database_and_delivery_work(client: TestClient[Any]) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "delivery": "ok", "open_sockets": 0}


def test_ready_needs_no_token_and_is_in_the_openapi_document(client: TestClient[Any]) -> None:
    assert client.get("/health/ready").status_code == 200
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert paths["/health/ready"]["get"]["security"] == [{}]


def test_not_ready_naming_the_database_when_it_is_unreachable(pg_database_url: str) -> None:
    url = make_url(pg_database_url)
    link = CuttableLink(url.host or "127.0.0.1", url.port or 5432)
    settings = make_settings(url.set(port=link.port).render_as_string(hide_password=False))
    with TestClient(app=create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        link.cut()
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
        assert response.json()["database"] == "unavailable"
        assert response.json()["delivery"] == "ok"
        assert response.json()["status"] == "not_ready"


@pytest.fixture
def server_on_cuttable_redis(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, CuttableLink]]:
    """A server whose delivery runs on Redis through a link the test can cut."""
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis on {REDIS_HOST}:{REDIS_PORT}: {exc}")
    link = CuttableLink(REDIS_HOST, REDIS_PORT)
    channels_url = f"redis://127.0.0.1:{link.port}/0"
    server = start_server(database_url, tmp_path / "server.log", {"WINDI_CHANNELS_URL": channels_url})
    try:
        yield server, link
    finally:
        link.cut()
        stop_server(server)


def test_not_ready_naming_delivery_when_its_backend_is_cut(
    server_on_cuttable_redis: tuple[LiveServer, CuttableLink],
) -> None:
    server, link = server_on_cuttable_redis
    with server.http() as http:
        assert wait_for(lambda: http.get("/health/ready").status_code == 200)
        link.cut()
        response = wait_for(lambda: (r := http.get("/health/ready")).status_code == 503 and r)
        assert response.json()["delivery"] == "unavailable"
        assert response.json()["database"] == "ok"
        assert response.json()["status"] == "not_ready"
        assert http.get("/health").status_code == 200  # the database answers: alive, but not ready
