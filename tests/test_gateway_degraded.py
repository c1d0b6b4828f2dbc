"""The gateway while live delivery is down: closed and refused with 1013, then caught up with sync.

A chat socket is served from the database in degraded mode; a gateway is not (it would have to poll
every chat of its person): it is closed, new ones are refused, and ``sync`` brings a device back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api import Api
from tests.conftest import LiveServer, free_port, start_server, stop_server, wait_for
from tests.redis_server import RedisServer
from tests.test_degraded_delivery import health
from tests.wsclient import is_message, open_gateway, receive_until, receive_until_closed, send_sync

CLOSE_TRY_AGAIN = 1013


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(redis: RedisServer, pg_database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(pg_database_url, tmp_path / "server.log", {"WINDI_CHANNELS_URL": redis.url})
    yield live
    stop_server(live)


def test_gateways_are_closed_and_refused_with_1013_while_delivery_is_down_and_sync_afterwards(
    redis: RedisServer, server: LiveServer
) -> None:
    with server.http() as http:
        api = Api(http)
        ada, bob = api.people("Ada", "Bob")
        chat_id = api.private_chat(ada, bob)["id"]
        with open_gateway(server.ws_url, bob.token, max_queue=None) as gateway:
            send_sync(gateway, {chat_id: 0})
            api.send(ada, chat_id, "live", "live-1")
            receive_until(gateway, is_message(client_id="live-1"))

            redis.stop()
            wait_for(lambda: health(server) == "degraded", interval=0.2)
            assert receive_until_closed(gateway)[1] == CLOSE_TRY_AGAIN
        with open_gateway(server.ws_url, bob.token) as refused:
            assert receive_until_closed(refused)[1] == CLOSE_TRY_AGAIN
        api.send(ada, chat_id, "while down", "down-1")  # stored and acked all the same

        redis.start()
        wait_for(lambda: health(server) == "ok", timeout=30, interval=0.2)
        with open_gateway(server.ws_url, bob.token, max_queue=None) as gateway:
            send_sync(gateway, {chat_id: 1})
            frames = receive_until(gateway, is_message(client_id="down-1"))
    assert [f["message"]["seq"] for f in frames if f["type"] == "message"] == [2]
    assert "Traceback" not in server.log()
