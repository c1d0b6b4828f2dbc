"""``/health/ready``: ready while the database answers and live delivery works, degraded (still 200)
while sockets are served from the database, 503 when the database does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import make_url

from tests.conftest import LiveServer, free_port, make_settings, start_server, stop_server, wait_for
from tests.redis_server import RedisServer
from tests.test_service import CuttableLink
from windi_chat.app import create_app


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
def server_on_own_redis(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, RedisServer]]:
    """A server whose delivery runs on a redis-server of the test's own, which the test can stop."""
    redis = RedisServer(free_port())
    redis.start()
    server = start_server(database_url, tmp_path / "server.log", {"WINDI_CHANNELS_URL": redis.url})
    try:
        yield server, redis
    finally:
        stop_server(server)
        redis.stop()


def test_degraded_while_delivery_is_down_and_ready_once_it_is_back(
    server_on_own_redis: tuple[LiveServer, RedisServer],
) -> None:
    server, redis = server_on_own_redis
    with server.http() as http:
        assert wait_for(lambda: http.get("/health/ready").status_code == 200)
        assert http.get("/health/ready").json()["status"] == "ready"
        redis.stop()
        # Sockets are served from the database meanwhile: the process stays in rotation.
        response = wait_for(lambda: (r := http.get("/health/ready")).json()["status"] == "degraded" and r)
        assert response.status_code == 200
        assert response.json()["delivery"] == "degraded"
        assert response.json()["database"] == "ok"
        assert http.get("/health").json()["status"] == "degraded"
        redis.start()
        back = wait_for(
            lambda: (r := http.get("/health/ready")).json()["status"] == "ready" and r, timeout=30
        )
        assert back.status_code == 200
        assert back.json()["delivery"] == "ok"
