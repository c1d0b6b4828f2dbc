"""Schemathesis fuzzes every operation of the OpenAPI document against a real server, as a logged-in
person whose chats exist: no answer may be a 5xx, and every documented answer must match its schema.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.conftest import EXAMPLES, World

pytestmark = pytest.mark.fuzz

# Fixed, so that a failure found in CI is found again locally.
SEED = 20261202
PAGING = ("offset", "limit", "after_seq", "before_seq", "after_rev")
# Each run must stay within a few minutes on a small CI machine.
TIME_LIMIT_SECONDS = 600


# Numbers at the edges of what a column holds, which a generator rarely reaches by itself. (TOML stops
# at 64 bits: the first numbers past them are in the regression tests, tests/test_input_bounds.py.)
EDGES = [0, -1, 2**31 - 1, 2**31, 2**63 - 1, -(2**63)]


def _config(world: World) -> str:
    """Half the generated ids are ones that exist, so that the fuzzer gets past "not found"; some of the
    rest, and some paging numbers, sit at the edges of what a column holds.
    """
    chats = [world.private_chat_id, world.group_id, *EDGES]
    people = [world.ada.id, world.bob.id, *EDGES]
    paging = "\n".join(f'"query.{name}" = {{ dictionary = "edges", probability = 0.3 }}' for name in PAGING)
    return f"""
[dictionaries.chats]
values = {chats}

[dictionaries.people]
values = {people}

[dictionaries.edges]
values = {EDGES}

[parameters]
"path.chat_id" = {{ dictionary = "chats", probability = 0.6 }}
"path.group_id" = {{ dictionary = "chats", probability = 0.6 }}
"path.user_id" = {{ dictionary = "people", probability = 0.6 }}
{paging}
"""


def test_no_operation_answers_a_5xx_or_breaks_its_schema(world: World, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(world))
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{world.server.base_url}/docs/openapi.json",
        *("--checks", "not_a_server_error,response_schema_conformance"),
        *("--header", f"Authorization: Bearer {world.ada.token}"),
        # Logging out would leave the rest of the run without a session to reach the API with.
        *("--exclude-operation-id", "logout"),
        *("--phases", "examples,coverage,fuzzing"),
        *("--max-examples", str(EXAMPLES)),
        *("--seed", str(SEED)),
        *("--workers", "1"),
        *("--request-timeout", "30"),
        "--no-color",
    ]

    run = subprocess.run(
        command, capture_output=True, text=True, timeout=TIME_LIMIT_SECONDS, cwd=tmp_path, check=False
    )

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    log = world.server.log()
    assert "Uncaught exception" not in log
    assert "Database error" not in log
