"""Operator commands: ``windi-chat users ...`` and ``windi-chat stats``, without SQL.

They run the same actions as the API, on the database of ``WINDI_DATABASE_URL``, and publish their
events (revoked sessions, members leaving) on ``WINDI_CHANNELS_URL`` so that running servers close the
affected sockets at once. With ``memory://`` no other process can hear them: servers then notice an
ended session within ``WINDI_SESSION_RECHECK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import click
import msgspec
from rich_click import RichCommand, RichGroup
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.account_deletion import delete_account
from windi_chat.accounts import UserService, normalise_email
from windi_chat.config import ConfigurationError, Settings
from windi_chat.database import create_db_config
from windi_chat.delivery import create_backend
from windi_chat.errors import DomainError
from windi_chat.events import EventBus
from windi_chat.models import Chat, Message, User
from windi_chat.schemas import Password, RegisterIn
from windi_chat.security import PasswordHasher
from windi_chat.sessions import revoke_other_sessions

__all__ = ("load_settings", "stats_command", "users_group")

T = TypeVar("T")
Action = Callable[[AsyncSession, EventBus], Awaitable[T]]


def load_settings() -> Settings:
    """The settings from the environment, or a clear command-line error naming what is wrong."""
    try:
        settings = Settings.from_env()
        settings.check()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    return settings


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = create_db_config(settings).get_engine()
    try:
        async with AsyncSession(engine, expire_on_commit=False) as db:
            yield db
    finally:
        await engine.dispose()


def _run(action: Action[T]) -> T:
    """Run ``action`` on the database, then publish the events it committed to the running servers."""
    settings = load_settings()
    published: list[tuple[bytes, str | list[str]]] = []

    async def main() -> T:
        async with _database(settings) as db:
            result = await action(db, EventBus(lambda payload, channel: published.append((payload, channel))))
        if published and not settings.channels_url.startswith("memory"):
            backend = create_backend(settings.channels_url, settings.namespace)
            await backend.on_startup()
            try:
                for payload, channel in published:
                    await backend.publish(payload, [channel] if isinstance(channel, str) else channel)
            finally:
                await backend.on_shutdown()
        return result

    try:
        return asyncio.run(main())
    except DomainError as exc:
        raise click.ClickException(exc.detail) from exc


def _hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib)


def _read_password(from_stdin: bool) -> str:
    """From standard input (one line), or asked for twice without echo."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        return msgspec.convert(password, Password)
    except msgspec.ValidationError as exc:
        raise click.ClickException(f"Password: {exc}") from exc


async def _user_id(db: AsyncSession, email: str) -> int:
    try:
        normal = normalise_email(email)
    except DomainError as error:
        raise click.ClickException(error.detail) from error
    user_id = await db.scalar(select(User.id).where(User.email == normal))
    if user_id is None:
        raise click.ClickException(f"No account has the email {email!r}")
    return user_id


@click.group("users", cls=RichGroup)
def users_group() -> None:
    """Create accounts, reset passwords, end sessions, delete accounts."""


@users_group.command("create", cls=RichCommand)
@click.option("--email", required=True, help="The account's email (its login).")
@click.option("--name", required=True, help="The name others see.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_user(email: str, name: str, password_stdin: bool) -> None:
    """Create an account (asks for the password unless --password-stdin)."""
    password = _read_password(password_stdin)
    try:
        data = msgspec.convert({"name": name, "email": email, "password": password}, RegisterIn)
    except msgspec.ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    hasher = _hasher(load_settings())

    async def action(db: AsyncSession, _events: EventBus) -> User:
        return await UserService(session=db).register(data, hasher)

    user = _run(action)
    click.echo(f"Created account {user.id} ({user.email}).")


@users_group.command("set-password", cls=RichCommand)
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def set_password(email: str, password_stdin: bool) -> None:
    """Set a new password; every session of the account ends."""
    password = _read_password(password_stdin)
    hasher = _hasher(load_settings())

    async def action(db: AsyncSession, events: EventBus) -> int:
        user = await db.get_one(User, await _user_id(db, email))
        user.password_hash = await hasher.hash(password)
        return await revoke_other_sessions(db, events, user.id, keep_id="")

    ended = _run(action)
    click.echo(f"Password set; {ended} sessions ended.")


@users_group.command("revoke-sessions", cls=RichCommand)
@click.argument("email")
def revoke_sessions(email: str) -> None:
    """End every session of the account: its tokens stop working and its sockets close."""

    async def action(db: AsyncSession, events: EventBus) -> int:
        return await revoke_other_sessions(db, events, await _user_id(db, email), keep_id="")

    click.echo(f"{_run(action)} sessions ended.")


@users_group.command("delete", cls=RichCommand)
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_user(email: str, yes: bool) -> None:
    """Delete the account as DELETE /users/me does: its messages stay, without its name."""
    if not yes:
        click.confirm(f"Delete the account {email} for good?", abort=True)

    async def action(db: AsyncSession, events: EventBus) -> int:
        user_id = await _user_id(db, email)
        await delete_account(db, events, user_id)
        return user_id

    click.echo(f"Deleted account {_run(action)}.")


@click.command("stats", cls=RichCommand)
@click.option(
    "--server",
    default=None,
    help="A running server to ask for its open sockets [default: http://127.0.0.1:$WINDI_PORT, or 8000].",
)
def stats_command(server: str | None) -> None:
    """Accounts, chats and messages in the database, and the open sockets of a running server."""

    async def action(db: AsyncSession, _events: EventBus) -> list[int]:
        return [
            await db.scalar(select(func.count()).select_from(table)) or 0 for table in (User, Chat, Message)
        ]

    accounts, chats, messages = _run(action)
    click.echo(f"accounts: {accounts}\nchats: {chats}\nmessages: {messages}")
    url = server or f"http://127.0.0.1:{os.environ.get('WINDI_PORT', '8000')}"
    click.echo(f"open sockets: {_open_sockets(url)}")


def _open_sockets(url: str) -> str:
    """What the server's readiness answer says (a 503 still counts them), or why it is unknown."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("use an http:// or https:// URL", param_hint="--server")
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=3) as response:  # noqa: S310 - checked above
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except OSError:
        return f"unknown (no server answered at {url})"
    try:
        return f"{int(json.loads(body)['open_sockets'])} (the process that answered at {url})"
    except (ValueError, KeyError, TypeError):
        return f"unknown (the server at {url} did not say)"
