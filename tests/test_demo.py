"""The demo data command: what it creates, and that running it again adds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from litestar.testing import TestClient

from tests.conftest import fetch, make_settings, run
from windi_chat.app import create_app
from windi_chat.demo import DEMO_PEOPLE, create_demo_data

COUNTS = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM chats), (SELECT count(*) FROM messages)"


def test_demo_data_is_created_once_however_often_it_runs(database_url: str) -> None:
    settings = make_settings(database_url)
    first = run(create_demo_data(settings))
    counts = fetch(database_url, COUNTS)[0]
    run(create_demo_data(settings))
    assert fetch(database_url, COUNTS)[0] == counts == (3, 2, 6)
    assert any(DEMO_PEOPLE[0][2] in line for line in first)  # the password is printed


def test_the_demo_group_shows_a_reply_an_edit_a_reaction_and_a_delete(database_url: str) -> None:
    run(create_demo_data(make_settings(database_url)))
    run(create_demo_data(make_settings(database_url)))
    _name, email, password = DEMO_PEOPLE[0]
    with TestClient(app=create_app(make_settings(database_url))) as client:
        token = client.post("/login", data={"username": email, "password": password}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        group = next(chat for chat in client.get("/chats", headers=headers).json() if chat["type"] == "group")
        messages = client.get(f"/history/{group['id']}", headers=headers).json()
    hello, numbered, reply, mistake = messages
    assert reply["reply_to"] == hello["seq"]
    assert numbered["edited_at"] is not None
    assert reply["reactions"] == [{"emoji": "👍", "user_ids": [hello["sender_id"]]}]
    assert (mistake["deleted"], mistake["text"]) == (True, "")
    assert group["last_message"]["seq"] == mistake["seq"]


def test_demo_people_can_log_in_and_see_their_chats(database_url: str) -> None:
    run(create_demo_data(make_settings(database_url)))
    _name, email, password = DEMO_PEOPLE[0]
    with TestClient(app=create_app(make_settings(database_url))) as client:
        token = client.post("/login", data={"username": email, "password": password}).json()["access_token"]
        inbox = client.get("/chats", headers={"Authorization": f"Bearer {token}"}).json()
    assert {chat["type"] for chat in inbox} == {"private", "group"}
    assert all(chat["last_message"] is not None for chat in inbox)


def test_demo_command_runs_on_the_default_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINDI_")}
    env.update(WINDI_ARGON2_TIME_COST="1", WINDI_ARGON2_MEMORY_KIB="1024")
    command = [sys.executable, "-m", "windi_chat.cli", "demo"]
    for _ in range(2):
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert DEMO_PEOPLE[1][1] in result.stdout
    url = f"sqlite+aiosqlite:///{tmp_path / 'windi_chat.db'}"
    assert fetch(url, COUNTS)[0] == (3, 2, 6)
