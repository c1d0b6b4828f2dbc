"""The database connection and schema migrations, for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from alembic import command
from windi_chat.config import Settings
from windi_chat.errors import DatabaseUnavailableError, DomainError

__all__ = ("create_db_config", "is_unavailable", "migrate", "migrations_path", "unit_of_work")

logger = logging.getLogger("windi_chat.database")

PACKAGE_DIR = Path(__file__).resolve().parent


def migrations_path() -> Path:
    """Where the alembic scripts are: inside an installed wheel, or at the top of a source checkout."""
    for candidate in (PACKAGE_DIR / "migrations", PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    msg = f"alembic migrations not found next to {PACKAGE_DIR}"
    raise RuntimeError(msg)


def create_db_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    """One engine for the app, with the pool and SQLite pragmas a chat server needs."""
    engine_config = EngineConfig(pool_pre_ping=True)
    if not settings.is_sqlite:
        engine_config = EngineConfig(pool_pre_ping=False, pool_size=settings.db_pool_size, max_overflow=10)
    config = SQLAlchemyAsyncConfig(
        connection_string=settings.database_url,
        engine_config=engine_config,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        alembic_config=AlembicAsyncConfig(
            script_location=str(migrations_path()), version_table_name="alembic_version"
        ),
        create_all=False,
    )
    if settings.is_sqlite:
        event.listen(config.get_engine().sync_engine, "connect", _sqlite_pragmas)
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys on, WAL for concurrent readers, and wait for a lock instead of failing at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to ``revision``; safe when several servers start at once.

    PostgreSQL serialises concurrent runs with an advisory lock (see ``alembic/env.py``); SQLite,
    which lives on one host, with a lock file beside the database.
    """
    lock_path = _sqlite_lock_path(engine)
    async with engine.connect() as connection:
        if lock_path is None:
            await connection.run_sync(_upgrade, revision)
        else:
            with lock_path.open("a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    await connection.run_sync(_upgrade, revision)
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
        await connection.commit()


def _upgrade(connection: Connection, revision: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_path()))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    logger.info("Database schema is at revision %s", revision)


def _sqlite_lock_path(engine: AsyncEngine) -> Path | None:
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:"):
        return None
    return Path(database + ".migrate.lock")


def is_unavailable(exc: BaseException | None) -> bool:
    """True when the error (or what caused it) says the database could not be reached."""
    while exc is not None:
        if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@asynccontextmanager
async def unit_of_work(sessions: Callable[[], AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A short session for one action outside a request (a socket's frame, say).

    A database that cannot be reached surfaces as :class:`DatabaseUnavailableError`, which the caller answers
    like any other domain error; anything else is left as it is.
    """
    try:
        async with sessions() as session:
            yield session
    except DomainError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailableError from exc
        raise
