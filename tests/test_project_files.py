"""The files operators run us with: the container image, compose, and the settings template.

No container engine runs here, so these tests read the files and check what keeps them working.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from windi_chat.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def containerfile_stages() -> list[list[str]]:
    """The Containerfile's instructions (continuation lines joined), grouped by stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Containerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_compose_runs_the_app_beside_a_healthy_postgres() -> None:
    services = compose()["services"]
    assert {"db", "app", "redis"} <= set(services)
    db = services["db"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(volume.startswith("db-data:") for volume in db["volumes"])
    assert "db-data" in compose()["volumes"]
    app = services["app"]
    assert app["build"]["dockerfile"] == "Containerfile"
    assert app["env_file"] == ".env"
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert "8000:8000" in app["ports"]
    assert "@db:5432/" in app["environment"]["WINDI_DATABASE_URL"]
    assert services["redis"]["profiles"] == ["redis", "scale"]


def test_compose_scale_profile_runs_a_second_replica_on_redis() -> None:
    services = compose()["services"]
    app, second = services["app"], services["app-2"]
    assert second["profiles"] == ["scale"]
    assert second["build"] == app["build"]
    assert second["env_file"] == app["env_file"]
    assert second["environment"]["WINDI_CHANNELS_URL"].endswith(":-redis://redis:6379/0}")
    assert second["environment"]["WINDI_DATABASE_URL"] == app["environment"]["WINDI_DATABASE_URL"]
    assert second["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "8001:8000" in second["ports"]
    assert "scale" in services["redis"]["profiles"]


def test_compose_gives_every_app_replica_room_for_many_sockets() -> None:
    services = compose()["services"]
    for name in ("app", "app-2"):
        nofile = services[name]["ulimits"]["nofile"]
        assert nofile["hard"] >= 65536
        assert nofile["soft"] <= nofile["hard"]


def test_image_is_multi_stage_slim_and_runs_as_a_user() -> None:
    stages = containerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert re.match(r"FROM python:3\.\d+-slim$", final[0])
    assert any(line.startswith("COPY --from=") for line in final)
    assert not any("pip install" in line for line in final)  # installed in the build stage
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    assert "EXPOSE 8000" in final
    healthcheck = next(line for line in final if line.startswith("HEALTHCHECK"))
    assert "/health" in healthcheck
    build = stages[0]
    assert any(re.search(r"pip install .*\"\.\[redis\]\"", line) for line in build)  # from this repository


def test_image_start_command_is_a_command_of_the_package() -> None:
    final = containerfile_stages()[-1]
    command = next(line for line in final if line.startswith("CMD "))
    program, subcommand, *options = yaml.safe_load(command[4:])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert program in scripts
    assert subcommand == "run"
    assert options[options.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the container
    result = subprocess.run(
        [sys.executable, "-m", "windi_chat.cli", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--forwarded-allow-ips" in result.stdout
    assert "--host" in result.stdout


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    for field in Settings.__struct_fields__:
        assert re.search(rf"^#? ?WINDI_{field.upper()}=", text, re.MULTILINE), (
            f"WINDI_{field.upper()} missing"
        )


def test_env_example_values_are_the_defaults() -> None:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#? ?(WINDI_[A-Z0-9_]+)=(.*)$", line)
        if match:
            values[match[1]] = match[2]
    defaults = Settings()
    for field in Settings.__struct_fields__:
        default = getattr(defaults, field)
        shown = values[f"WINDI_{field.upper()}"]
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        if isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        assert shown == expected, f"WINDI_{field.upper()}: {shown!r} != {expected!r}"
