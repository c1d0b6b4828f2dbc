"""Ports for the servers the tests start, safe when several test processes (pytest-xdist workers) run at once.

A port taken with ``bind(0)`` comes from the kernel's ephemeral range, the same range every outgoing
connection's own port comes from: between the pick and the server's bind, another process's client could
take it. So each worker hands out ports from a share of its own below that range, in turn, skipping any
that something already listens on.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ("free_port", "listens_on")

LOWEST_PORT = 10_000
TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def worker_ports() -> range:
    """This process's share of the ports between ``LOWEST_PORT`` and the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    index = int(worker.removeprefix("gw") or "0") % count
    share = (max(_ephemeral_start(), LOWEST_PORT + 1_000) - LOWEST_PORT) // count
    return range(LOWEST_PORT + index * share, LOWEST_PORT + (index + 1) * share)


def _cycle() -> Iterator[int]:
    ports = worker_ports()
    start = random.randrange(len(ports))  # another test run on the machine likely starts elsewhere
    return itertools.cycle([*ports[start:], *ports[:start]])


_PORTS = _cycle()


def free_port() -> int:
    """A port of this worker's share that nothing listens on now (the next one in turn)."""
    for port in itertools.islice(_PORTS, 1_000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # the whole share busy: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def socket_rows(pid: int) -> Iterator[tuple[int, int, str]]:
    """(local port, remote port, state) of every TCP socket the process ``pid`` holds, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                yield int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3]


def listens_on(pid: int, port: int) -> bool:
    """Whether the process itself listens on ``port`` (not some other process that took it first)."""
    try:
        return any(local == port and state == TCP_LISTEN for local, _, state in socket_rows(pid))
    except OSError:  # the process is gone
        return False
