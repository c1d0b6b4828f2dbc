"""The ``windi-chat`` command: Litestar's CLI with the app preset, plus ``run``, ``migrate`` and ``demo``.

Litestar's own commands (``routes``, ``info``, ``schema``) and advanced-alchemy's ``database`` group
come along, because this is Litestar's command group with ``--app`` already filled in.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import resource
import sys

import click
import uvicorn
from litestar.cli.main import litestar_group
from rich_click import RichCommand  # Litestar's command class (rich-click is one of its dependencies)

from windi_chat.admin import load_settings, stats_command, users_group
from windi_chat.config import ConfigurationError
from windi_chat.frames import MAX_FRAME_BYTES
from windi_chat.logs import logging_dict
from windi_chat.transports import ClosingWebSocketProtocol, GuardedHttpProtocol, max_connections

__all__ = ("main",)

APP_FACTORY = "windi_chat.app:create_app"

logger = logging.getLogger("windi_chat.cli")


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard limit, and log both: every socket is a descriptor.

    Many systems and container engines start processes at a soft limit of 1024, which a few hundred
    clients and their reconnects use up; the hard limit is what the operator allows. Worker processes
    inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = soft
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            raised = hard
        except (ValueError, OSError) as exc:
            logger.warning("Could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    logger.info("Open files limit: soft %d (was %d), hard %s", raised, soft, hard_text)


@click.command("run", cls=RichCommand)
@click.option("--host", default="127.0.0.1", show_default=True, envvar="WINDI_HOST", help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int, envvar="WINDI_PORT", help="Port to bind.")
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@click.option("--access-log", is_flag=True, help="Log every HTTP request.")
@click.option(
    "--forwarded-allow-ips",
    # Empty by default, not even 127.0.0.1: anything on the host (or a proxy that passes the header
    # through) could otherwise pick its own address and walk around the login rate limit.
    default="",
    envvar="WINDI_FORWARDED_ALLOW_IPS",
    help="Proxies whose X-Forwarded-* headers are trusted (comma-separated addresses or networks; "
    "none by default).",
)
def run_command(
    host: str, port: int, workers: int, reload: bool, access_log: bool, forwarded_allow_ips: str
) -> None:
    """Serve WinDI Chat with uvicorn (migrating the database first unless WINDI_MIGRATE_ON_START=false)."""
    settings = load_settings()
    if workers > 1 and settings.channels_url.startswith("memory"):
        raise click.UsageError(
            "WINDI_CHANNELS_URL=memory:// delivers within one process only: "
            "use --workers 1, or a redis:// or postgresql:// channels URL"
        )
    log_config = logging_dict(settings.log_level, settings.effective_log_format)
    if access_log:
        log_config["loggers"]["uvicorn.access"]["level"] = "INFO"
    logging.config.dictConfig(log_config)  # uvicorn applies it again; the line below needs it now
    raise_open_files_limit()
    logger.info("At most %d open connections (WINDI_MAX_CONNECTIONS)", max_connections())
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        log_config=log_config,
        access_log=access_log,
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips,
        ws_max_size=MAX_FRAME_BYTES,  # uvicorn refuses larger frames before buffering them
        # Chat frames are small: per-message deflate would cost CPU on every delivery and tens of
        # kilobytes of zlib state on every idle socket.
        ws_per_message_deflate=False,
        http=GuardedHttpProtocol,  # WINDI_MAX_CONNECTIONS and WINDI_HTTP_HEADER_TIMEOUT
        ws=ClosingWebSocketProtocol,  # a close that frees the connection within WINDI_WS_CLOSE_TIMEOUT
        timeout_graceful_shutdown=10,
    )


@click.command("migrate", cls=RichCommand)
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def migrate_command(revision: str) -> None:
    """Bring the database schema up to date."""
    from windi_chat.database import create_db_config, migrate

    settings = load_settings()

    async def _run() -> None:
        engine = create_db_config(settings).get_engine()
        try:
            await migrate(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(_run())
    click.echo(f"Database schema is at {revision}.")


@click.command("demo", cls=RichCommand)
def demo_command() -> None:
    """Fill the database with demo people, chats and messages (running it again adds nothing)."""
    from windi_chat.demo import create_demo_data

    settings = load_settings()
    for line in asyncio.run(create_demo_data(settings)):
        click.echo(line)


for command in (run_command, migrate_command, demo_command, users_group, stats_command):
    litestar_group.add_command(command)


def main() -> None:
    """Entry point of the ``windi-chat`` console script."""
    os.environ.setdefault("LITESTAR_APP", APP_FACTORY)
    litestar_group.help = (
        "WinDI Chat: serve, migrate, load demo data, manage accounts, and Litestar's own commands."
    )
    try:
        litestar_group(prog_name="windi-chat")
    except ConfigurationError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
