"""The database connection and schema migrations, for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
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
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from alembic import command
from windi_chat.config import Settings
from windi_chat.errors import DatabaseUnavailableError, DomainError

__all__ = (
    "create_db_config",
    "is_unavailable",
    "migrate",
    "migrations_path",
    "unavailable_as_domain_error",
    "unavailable_cause",
    "unit_of_work",
)

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
    """One engine for the app, with the pool and SQLite pragmas a chat server needs.

    ``hide_parameters``: a failed statement's error (and so the log) never carries its parameters,
    which hold message texts, names and emails.
    """
    engine_config = EngineConfig(pool_pre_ping=True, hide_parameters=True)
    if not settings.is_sqlite:
        # A request that finds every connection busy for db_pool_timeout seconds answers 503.
        engine_config = EngineConfig(
            hide_parameters=True,
            pool_pre_ping=False,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout,
            # The connection returned last goes out first. The message writer gives its connection back
            # whenever its queue runs dry, and under a steady load takes one again many times a second:
            # handed out in turn, it went round every backend of the pool, and its first batch on each
            # took 15-20 ms (the function, its plan, cold caches) where the next took 3-5 ms.
            pool_use_lifo=True,
        )
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


# SQLSTATEs that mean "the server cannot serve this connection now", not "this statement is wrong":
# class 08 (connection exceptions), 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now:
# a restart, a failover or recovery) and 53300 (too many connections, which frees up by itself).
UNAVAILABLE_SQLSTATE_CLASSES = ("08",)
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_unavailable(exc: BaseException | None) -> bool:
    """True when the error (or what caused it) says the database cannot be reached or cannot serve now.

    Drivers and wrappers differ in what they raise for a restarting server (asyncpg's
    ``CannotConnectNowError``, wrapped by SQLAlchemy as a plain ``DBAPIError``, wrapped again by
    advanced-alchemy), so the whole chain of causes is read, by exception class and by SQLSTATE.
    """
    while exc is not None:
        if isinstance(exc, OSError | TimeoutError | OperationalError | InterfaceError | PoolTimeoutError):
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if _unavailable_sqlstate(getattr(exc, "sqlstate", None)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _unavailable_sqlstate(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and (
        sqlstate.startswith(UNAVAILABLE_SQLSTATE_CLASSES) or sqlstate in UNAVAILABLE_SQLSTATES
    )


def unavailable_cause(exc: BaseException) -> str:
    """The innermost cause of an unavailability, for a log line: its class and SQLSTATE, never its text."""
    cause: BaseException = exc
    while (inner := cause.__cause__ or cause.__context__) is not None:
        cause = inner
    sqlstate = getattr(cause, "sqlstate", None)
    return f"{type(cause).__name__} ({sqlstate})" if isinstance(sqlstate, str) else type(cause).__name__


@contextmanager
def unavailable_as_domain_error() -> Iterator[None]:
    """A database that cannot be reached surfaces as :class:`DatabaseUnavailableError`, which the caller
    answers like any other domain error; anything else is left as it is."""
    try:
        yield
    except DomainError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailableError from exc
        raise


@asynccontextmanager
async def unit_of_work(sessions: Callable[[], AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A short session for one action outside a request (a socket's frame, say), with unavailability
    as a domain error (:func:`unavailable_as_domain_error`)."""
    with unavailable_as_domain_error():
        async with sessions() as session:
            yield session
