"""The processes under test: the bench database, the chat server, the echo server, and their counters.

The server always runs in its own process, started here with production-like settings, so that its CPU
time and memory can be read from ``/proc`` without the driver's own work mixed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

__all__ = (
    "ADMIN_DSN",
    "BENCH_DB",
    "DB_DSN",
    "ServerProcess",
    "git_commit",
    "isolate_driver",
    "machine_info",
    "raise_fd_limit",
    "reset_database",
    "running_server",
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# BENCH_DATABASE names another database, for a run beside one that uses the default.
BENCH_DB = os.environ.get("BENCH_DATABASE", "windi_bench")
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_DSN = f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"
# Scenarios that need hundreds or thousands of accounts sign them up at this cost: argon2 at its
# production cost would take most of the run, and nothing they measure hashes a password.
CHEAP_ARGON2 = {"WINDI_ARGON2_TIME_COST": "1", "WINDI_ARGON2_MEMORY_KIB": "1024"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT = 60.0


async def reset_database() -> None:
    """Drop and create the bench database, so every scenario starts from an empty schema."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await connection.close()


# The CPUs servers started from now on may use; None: all of them (see ``isolate_driver``).
_server_cpus: set[int] | None = None


def isolate_driver() -> dict[str, list[int]]:
    """Keep the driver on a CPU of its own and every server off it, on a machine with two or more.

    Left to the scheduler, the driver was often woken on the CPU the server ran on (it wakes a
    process on the CPU of whoever woke it) and the two took turns of about a millisecond there while
    the other CPU stood idle: a wait the server would not have beside a load generator on another
    machine. PostgreSQL's processes are not ours to place and run anywhere.
    """
    global _server_cpus  # one placement for the whole run
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {}
    driver = {cpus[-1]}
    os.sched_setaffinity(0, driver)
    _server_cpus = set(cpus) - driver
    return {"driver_cpus": sorted(driver), "server_cpus": sorted(_server_cpus)}


def _place(pid: int) -> None:
    """Move a server that has just started off the driver's CPU; the threads it starts later inherit it."""
    if _server_cpus is not None:
        with contextlib.suppress(OSError):  # it has already ended: its log will say why
            os.sched_setaffinity(pid, _server_cpus)


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; child servers inherit it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: where it listens and how much CPU and memory it has used."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User plus system CPU of the whole process (all threads), from ``/proc/<pid>/stat``."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def error_lines(self) -> list[str]:
        """Log lines at ERROR or above: a clean run has none."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line]


def server_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Production settings for the chat server; scenarios override only what they say they do."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WINDI_")}
    env.update(
        WINDI_ENV="production",
        WINDI_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{BENCH_DB}",
        WINDI_JWT_SECRET=secrets.token_urlsafe(36),  # 48 bytes
        WINDI_LOG_LEVEL="WARNING",
        WINDI_AUTH_RATE_LIMIT="0",
        WINDI_WS_FRAMES_PER_SECOND="1000000",
        # The load scenarios send as fast as they can from few people; ``abuse`` sets the real limits.
        WINDI_SEND_RATE="1000000",
        WINDI_SEND_BURST="1000000",
        WINDI_SEARCH_RATE="1000000",
        WINDI_SEARCH_BURST="1000000",
    )
    env.update(overrides or {})
    return env


def _start(name: str, argv: list[str], env: dict[str, str], port: int) -> ServerProcess:
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = RESULTS / f"{name}-server.log"
    workdir = tempfile.mkdtemp(prefix="windi-bench-")  # no stray .env is read
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _place(process.pid)
    return ServerProcess(name=name, process=process, port=port, log_path=log_path, env=env)


async def _wait_ready(server: ServerProcess, path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    tail = server.log_path.read_text(errors="replace")[-2000:]
    msg = f"{server.name} server did not become ready; log tail:\n{tail}"
    raise RuntimeError(msg)


def _stop(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextlib.asynccontextmanager
async def running_server(
    kind: str, name: str, overrides: dict[str, str] | None = None, *, fresh_database: bool = True
) -> AsyncIterator[ServerProcess]:
    """Start the chat server (``kind="chat"``, on a fresh bench database unless told to share the one
    another server uses) or the echo server."""
    port = _free_port()
    env = server_env(overrides)
    if kind == "chat":
        if fresh_database:
            await reset_database()
        argv = [sys.executable, "-m", "windi_chat.cli", "run", "--host", "127.0.0.1", "--port", str(port)]
        ready_path = "/health"
    else:
        argv = [sys.executable, "-m", "bench.echo", "--port", str(port)]
        env["PYTHONPATH"] = str(REPO)
        ready_path = "/"
    server = _start(name, argv, env, port)
    try:
        await _wait_ready(server, ready_path)
        yield server
    finally:
        _stop(server)


def git_commit() -> dict[str, object]:
    def git(*args: str) -> str:
        git_path = shutil.which("git") or "git"
        result = subprocess.run(  # noqa: S603 - fixed git arguments
            [git_path, *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def machine_info() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
