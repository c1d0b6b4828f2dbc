"""Alembic environment for WinDI Chat.

Three ways in, one migration path:
- the server (and ``windi-chat migrate``) passes an open connection in ``config.attributes``;
- advanced-alchemy's ``windi-chat database ...`` commands pass their engine on the config;
- plain ``alembic`` reads ``WINDI_DATABASE_URL`` like the server does.
"""

import asyncio

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alembic import context
from windi_chat.models import metadata

config = context.config


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two servers starting at once: the second waits here, then finds nothing left to do.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274700)")
        context.run_migrations()


async def run_async_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    engine = getattr(config, "engine", None)
    if engine is None:
        from windi_chat.config import Settings

        engine = create_async_engine(
            Settings.from_env().database_url, poolclass=pool.NullPool, hide_parameters=True
        )
    asyncio.run(run_async_migrations(engine))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or getattr(config, "db_url", None),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
