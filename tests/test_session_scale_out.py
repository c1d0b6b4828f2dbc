"""Revocations on two server processes: a logout on A ends the session on B, for REST and sockets, and
a process that may have missed the event asks the database instead of trusting its memory.
"""

from __future__ import annotations

from pathlib import Path

from tests.api import Account, Api
from tests.conftest import wait_for
from tests.test_scale_out import (  # noqa: F401 - fixtures used by name
    Cluster,
    RedisServer,
    _start_cluster,
    cluster,
    redis_server,
)
from tests.wsclient import open_socket, receive_until_closed, send_and_confirm

CLOSE_UNAUTHORIZED = 4401


def refused(api: Api, account: Account) -> bool:
    return bool(api.me(account, expect=None).status_code == 401)


def test_logout_on_one_process_refuses_the_token_and_closes_its_socket_on_the_other(
    cluster: Cluster,  # noqa: F811 - the fixture
) -> None:
    api_a, api_b = cluster.api(cluster.a), cluster.api(cluster.b)
    ada, bob = api_a.people("Ada", "Bob")
    chat_id = api_a.private_chat(ada, bob)["id"]
    api_b.me(ada)  # B has checked the session and remembers it as live
    with open_socket(cluster.b.ws_url, chat_id, ada.token) as on_b:
        send_and_confirm(on_b, "before")
        api_a.logout(ada)
        frames, code = receive_until_closed(on_b, timeout=5)
    assert code == CLOSE_UNAUTHORIZED
    assert frames == []
    wait_for(lambda: refused(api_b, ada), timeout=5)


def test_a_process_whose_backend_dropped_checks_sessions_in_the_database(
    redis_server: RedisServer,  # noqa: F811 - the fixture
    postgres_url: str,
    tmp_path: Path,
) -> None:
    pair = _start_cluster("redis", postgres_url, tmp_path, redis_server)
    try:
        api_a, api_b = pair.api(pair.a), pair.api(pair.b)
        ada, bob = api_a.people("Ada", "Bob")
        api_b.me(ada)  # remembered as live on B
        api_b.me(bob)

        redis_server.stop()  # the revocation below cannot travel
        api_a.logout(ada)
        wait_for(lambda: refused(api_b, ada), timeout=10)
        api_b.me(bob)  # live sessions still work, checked in the database

        redis_server.start()
        # Requests make B probe the backend; once a probe comes back, B re-reads the revocations.
        wait_for(lambda: api_b.me(bob) and "checked from memory again" in pair.b.log(), timeout=30)
        api_b.me(ada, expect=401)
        api_b.me(bob)
    finally:
        pair.close()
