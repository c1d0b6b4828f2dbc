"""Settings: one explicit object, read from ``WINDI_*`` variables and a ``.env`` file."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from windi_chat.namespaces import MAX_NAMESPACE_LENGTH, NAMESPACE_PATTERN, default_namespace
from windi_chat.origins import parse_origins

__all__ = ("ConfigurationError", "Settings", "read_env_file")

logger = logging.getLogger("windi_chat.config")

ENV_PREFIX = "WINDI_"
MIN_SECRET_BYTES = 32
_INLINE_COMMENT = re.compile(r"\s+#")


class ConfigurationError(Exception):
    """A setting makes the server unable to start; the message says which and how to fix it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of the server. Each field is read from ``WINDI_<FIELD>`` (upper case)."""

    env: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///windi_chat.db"
    jwt_secret: str = ""
    jwt_secret_file: str = ".windi_jwt_secret"  # noqa: S105 - a file name
    token_ttl_seconds: Annotated[int, msgspec.Meta(ge=1)] = 900
    refresh_ttl_seconds: Annotated[int, msgspec.Meta(ge=1)] = 30 * 86_400
    # Sessions whose liveness each process remembers after asking the database once.
    session_cache_size: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    # ...and for how long, before asking again.
    session_recheck_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    channels_url: str = "memory://"
    # Prefix of every channel name; empty: derived from the database's name (see ``namespaces``).
    channels_namespace: Annotated[
        str, msgspec.Meta(max_length=MAX_NAMESPACE_LENGTH, pattern=NAMESPACE_PATTERN)
    ] = ""
    # While the delivery backend is down, how often each process reads its sockets' new events.
    delivery_poll_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # Leave what startup built out of later garbage collections (see ``app.freeze_startup_heap``).
    gc_freeze: bool = True
    log_level: str = "INFO"
    log_format: Literal["text", "json", ""] = ""
    auth_rate_limit: int = 30
    # Failed password logins of one account (from any address) before its logins are locked for the
    # rest of the window; 0 turns the lock off.
    login_max_failures: Annotated[int, msgspec.Meta(ge=0)] = 10
    login_failure_window_seconds: Annotated[int, msgspec.Meta(ge=1)] = 900
    ws_frames_per_second: float = 20.0
    ws_socket_backlog: Annotated[int, msgspec.Meta(ge=1)] = 1000
    ws_sends_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 32  # a socket's sends awaiting their ack
    # Messages (after_seq) or revs (after_rev) a reconnecting socket may replay; past it, a resync frame.
    ws_catch_up_limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    ws_send_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    ws_close_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # The gateway (``/ws``): missed messages of one chat it replays on ``sync`` before it sends resync
    # instead, and how long it waits for the ``sync`` frame before it goes live without one.
    sync_limit: Annotated[int, msgspec.Meta(ge=1)] = 1000
    sync_wait_seconds: Annotated[float, msgspec.Meta(ge=0, le=60)] = 2.0
    http_header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    max_connections: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: the open-files limit less a reserve
    migrate_on_start: bool = True
    db_startup_timeout: float = 60.0
    allow_sqlite_in_production: bool = False
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    db_pool_size: Annotated[int, msgspec.Meta(ge=1)] = 10
    db_max_overflow: Annotated[int, msgspec.Meta(ge=0)] = 10
    db_pool_timeout: Annotated[int, msgspec.Meta(ge=1)] = 30
    allowed_origins: str = ""
    # Abuse limits: what one person may take of a process, whatever the number of their sockets.
    max_group_members: Annotated[int, msgspec.Meta(ge=2)] = 1000
    # Different emoji one message may carry: each is a row per person, and every copy of the message
    # carries them all.
    max_reactions_per_message: Annotated[int, msgspec.Meta(ge=1)] = 20
    ws_max_sockets_per_user: Annotated[int, msgspec.Meta(ge=1)] = 32
    send_rate: Annotated[float, msgspec.Meta(gt=0)] = 20.0  # messages a second per person
    send_burst: Annotated[int, msgspec.Meta(ge=1)] = 50
    typing_interval: Annotated[float, msgspec.Meta(ge=0)] = 2.0  # seconds between forwarded typing events
    # Message search: the longest query, in characters, and how many of the newest matches are ranked.
    search_max_query_length: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    search_candidates: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    # Searches a second per person, after a burst: each reads an index, so a script cannot hog the database.
    search_rate: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    search_burst: Annotated[int, msgspec.Meta(ge=1)] = 10
    # Searches one process runs at once, each on a database connection, and how long one may take
    # (PostgreSQL's statement timeout; also the longest wait for a free slot): searches cannot take
    # the pool from sends, whatever they ask for.
    search_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 2
    search_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0
    # Presence: a person stays online this long after their last gateway closes, so a reconnect does
    # not flicker; each process announces who is online on it this often (a silent process's people
    # go offline after the grace and two missed announcements).
    presence_grace_seconds: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    presence_heartbeat_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # Prometheus metrics at /metrics, or on a port of their own when metrics_port is set.
    metrics: bool = False
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0

    def __post_init__(self) -> None:
        parse_origins(self.allowed_origins)  # a bad entry is refused at start-up, naming it

    @classmethod
    def from_env(
        cls, environ: dict[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Build settings from a ``.env`` file overlaid by the process environment (which wins)."""
        values: dict[str, str] = {}
        if env_file is not None:
            values.update(read_env_file(Path(env_file)))
        values.update(os.environ if environ is None else environ)
        known = {field for field in cls.__struct_fields__}
        fields = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in values.items()
            if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in known
        }
        try:
            return msgspec.convert(fields, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigurationError(f"Invalid setting: {exc} (check the WINDI_* variables)") from exc

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def origins(self) -> tuple[str, ...]:
        """The browser origins allowed to use the server; empty: only the server's own."""
        return parse_origins(self.allowed_origins)

    @property
    def namespace(self) -> str:
        """The channel namespace of this deployment: the setting, or one from the database's name."""
        return self.channels_namespace or default_namespace(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_log_format(self) -> str:
        """Production logs JSON unless told otherwise; development logs text."""
        return self.log_format or ("json" if self.is_production else "text")

    def check(self) -> None:
        """Refuse settings that would make a production server unsafe."""
        if not self.is_production:
            return
        if len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"WINDI_ENV=production needs WINDI_JWT_SECRET of at least {MIN_SECRET_BYTES} bytes; "
                'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        if self.is_sqlite and not self.allow_sqlite_in_production:
            raise ConfigurationError(
                "WINDI_ENV=production needs a PostgreSQL WINDI_DATABASE_URL "
                "(or WINDI_ALLOW_SQLITE_IN_PRODUCTION=true to run on SQLite anyway)"
            )

    def resolve_jwt_secret(self) -> str:
        """Return the signing secret, generating and keeping a development one when none is set.

        The generated secret is written to a file so that tokens survive a restart of a laptop server.
        A production server never generates one: :meth:`check` refuses it first, and so does this.
        """
        if self.jwt_secret:
            if len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
                logger.warning(
                    "WINDI_JWT_SECRET is shorter than %d bytes: fine for a test, not for real use",
                    MIN_SECRET_BYTES,
                )
            return self.jwt_secret
        if self.is_production:
            raise ConfigurationError("WINDI_ENV=production needs WINDI_JWT_SECRET: no secret is generated")
        path = Path(self.jwt_secret_file)
        if path.exists():
            secret = path.read_text().strip()
            if len(secret.encode()) >= MIN_SECRET_BYTES:
                logger.info("Using the development JWT secret kept in %s", path)
                return secret
        secret = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(secret + "\n")
        logger.warning(
            "No WINDI_JWT_SECRET set: generated a development secret and kept it in %s "
            "(set WINDI_JWT_SECRET in production)",
            path,
        )
        return secret


def read_env_file(path: Path) -> dict[str, str]:
    """Read ``KEY=VALUE`` lines, skipping blanks and ``#`` comments and stripping matching quotes.

    As in other ``.env`` readers, `` #`` after an unquoted value starts a comment; a quoted value keeps
    everything between its quotes.
    """
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw_line in path.read_text().splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        closing = value.find(value[0], 1) if value[:1] in ("'", '"') else -1
        value = value[1:closing] if closing > 0 else _INLINE_COMMENT.split(value, maxsplit=1)[0]
        values[key.strip()] = value
    return values
