"""A redis-server of a test's own, on a free port, so stopping and starting it disturbs nothing else."""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass

import pytest

from tests.conftest import REQUIRE_PG, wait_for

__all__ = ("RedisServer",)


@dataclass
class RedisServer:
    """A redis-server of the test's own, so restarting it disturbs nothing else."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            (pytest.fail if REQUIRE_PG else pytest.skip)("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self._answers, timeout=10)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
