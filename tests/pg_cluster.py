"""A PostgreSQL cluster a test owns, so it can stop, restart, refuse connections and cut sessions."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import fetch, free_port, wait_for

__all__ = ("PG_BIN", "OwnPostgres")

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)
LOCKER = "windi-test-locker"


class OwnPostgres:
    """A throw-away PostgreSQL cluster on a free port (run as the postgres user when we are root)."""

    def __init__(self) -> None:
        assert PG_BIN is not None
        self.dir = Path(tempfile.mkdtemp(prefix="windi-pg-", dir="/tmp"))
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")

    def _command(self, tool: str, *args: str) -> list[str]:
        assert PG_BIN is not None
        return [*self._as_postgres, str(PG_BIN / tool), *args]

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(self._command(tool, *args), check=True, capture_output=True, timeout=120)

    def start(self, *options: str) -> None:
        settings = " ".join(
            [f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", *options]
        )
        self._run(
            "pg_ctl", "-D", str(self.dir / "data"), "-o", settings, "-l", str(self.dir / "log"), "-w", "start"
        )

    def start_refusing_connections(self) -> None:
        """Start as a standby without hot standby: every connection gets 57P03 (cannot connect now).

        That is what clients see while PostgreSQL starts up, recovers or waits for a failover, held
        open until :meth:`promote`, so a test can look at the answers at its own pace.
        """
        signal_file = self.dir / "data" / "standby.signal"
        signal_file.touch()
        if os.geteuid() == 0:
            shutil.chown(signal_file, "postgres", "postgres")
        self.start("-c hot_standby=off")

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "promote")

    def restart_immediately(self) -> None:
        """Kill the server without a shutdown (as a crash would) and start it again: it recovers first."""
        log = str(self.dir / "log")
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-l", log, "-w", "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    @contextmanager
    def row_locked(self, select_for_update: str) -> Iterator[None]:
        """Hold a row lock from another session, so that the app's writes to that row wait on it."""
        statement = f"BEGIN; {select_for_update}; SELECT pg_sleep(600)"
        env = {**os.environ, "PGAPPNAME": LOCKER}
        command = self._command(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", statement
        )
        locker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: self._sessions("application_name = :name AND wait_event = 'PgSleep'", LOCKER))
            yield
        finally:
            fetch(
                self.url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :n",
                n=LOCKER,
            )
            locker.wait(timeout=30)

    def terminate_lock_waiters(self) -> int:
        """Wait until one of the app's sessions waits on a lock, then end it as an administrator would."""
        wait_for(lambda: self._sessions("wait_event_type = 'Lock'", LOCKER))
        rows = fetch(
            self.url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )
        return len(rows)

    def _sessions(self, condition: str, name: str) -> list[object]:
        return fetch(self.url, f"SELECT pid FROM pg_stat_activity WHERE {condition}", name=name)  # noqa: S608

    def remove(self) -> None:
        subprocess.run(
            self._command("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop"),
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)
