"""Settings: ``WINDI_*`` variables and ``.env``, the production safety checks, the development secret."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from tests.conftest import TEST_SECRET, make_settings
from windi_chat.app import create_app
from windi_chat.config import ConfigurationError, Settings
from windi_chat.logs import logging_dict

PG = "postgresql+asyncpg://chat@db.example/chat"
LONG_SECRET = "s" * 32


def write_env_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def config_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of ``windi_chat.config``; the app's logging config stops ``windi_chat`` propagating to root."""
    logger = logging.getLogger("windi_chat.config")
    caplog.set_level(logging.INFO, logger=logger.name)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


# --- Reading the environment and .env ---


def test_from_env_reads_windi_variables_and_converts_their_types() -> None:
    settings = Settings.from_env(
        environ={
            "WINDI_DATABASE_URL": PG,
            "WINDI_TOKEN_TTL_SECONDS": "60",
            "WINDI_MIGRATE_ON_START": "false",
            "WINDI_ENV": "production",
        },
        env_file=None,
    )
    assert settings.database_url == PG
    assert settings.token_ttl_seconds == 60
    assert settings.migrate_on_start is False
    assert settings.env == "production"


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINDI_AUTH_RATE_LIMIT", "7")
    assert Settings.from_env(env_file=None).auth_rate_limit == 7


def test_from_env_ignores_variables_without_the_windi_prefix() -> None:
    settings = Settings.from_env(environ={"DATABASE_URL": PG, "LOG_LEVEL": "ERROR"}, env_file=None)
    assert settings.database_url == Settings().database_url
    assert settings.log_level == Settings().log_level


def test_unknown_windi_variables_are_ignored() -> None:
    settings = Settings.from_env(
        environ={"WINDI_NOT_A_SETTING": "whatever", "WINDI_TEST_DATABASE_URL": PG}, env_file=None
    )
    assert settings == Settings()


def test_a_bad_integer_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="token_ttl_seconds"):
        Settings.from_env(environ={"WINDI_TOKEN_TTL_SECONDS": "soon"}, env_file=None)


def test_a_bad_boolean_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="migrate_on_start"):
        Settings.from_env(environ={"WINDI_MIGRATE_ON_START": "perhaps"}, env_file=None)


def test_an_unknown_environment_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="env"):
        Settings.from_env(environ={"WINDI_ENV": "staging"}, env_file=None)


def test_from_env_reads_a_dotenv_file(tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / ".env", f"WINDI_DATABASE_URL={PG}\nWINDI_AUTH_RATE_LIMIT=5\n")
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.database_url == PG
    assert settings.auth_rate_limit == 5


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    env_file = write_env_file(tmp_path / ".env", "WINDI_LOG_LEVEL=ERROR\nWINDI_AUTH_RATE_LIMIT=5\n")
    settings = Settings.from_env(environ={"WINDI_LOG_LEVEL": "DEBUG"}, env_file=env_file)
    assert settings.log_level == "DEBUG"
    assert settings.auth_rate_limit == 5


def test_a_missing_dotenv_file_is_not_an_error(tmp_path: Path) -> None:
    assert Settings.from_env(environ={}, env_file=tmp_path / "absent.env") == Settings()


def test_dotenv_values_lose_their_surrounding_quotes(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env",
        f"WINDI_JWT_SECRET=\"{LONG_SECRET} with spaces\"\nWINDI_DATABASE_URL='{PG}'\n",
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.jwt_secret == f"{LONG_SECRET} with spaces"
    assert settings.database_url == PG


def test_dotenv_comment_lines_blank_lines_and_export_are_handled(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env",
        "# WINDI_LOG_LEVEL=ERROR\n\n   # WINDI_AUTH_RATE_LIMIT=1\n"
        "export WINDI_TOKEN_TTL_SECONDS=120\nnot a pair\n",
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.log_level == Settings().log_level
    assert settings.auth_rate_limit == Settings().auth_rate_limit
    assert settings.token_ttl_seconds == 120


def test_dotenv_inline_comments_after_a_value_are_dropped(tmp_path: Path) -> None:
    env_file = write_env_file(
        tmp_path / ".env",
        'WINDI_AUTH_RATE_LIMIT=10  # per minute\nWINDI_LOG_LEVEL="WARNING" # quieter\n',
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.auth_rate_limit == 10
    assert settings.log_level == "WARNING"


def test_a_hash_inside_a_value_is_kept(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://chat:pa#ss@db.example/chat"
    env_file = write_env_file(
        tmp_path / ".env", f"WINDI_DATABASE_URL={url}\nWINDI_JWT_SECRET='{LONG_SECRET} # not a comment'\n"
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.database_url == url
    assert settings.jwt_secret == f"{LONG_SECRET} # not a comment"


# --- Production safety ---


def test_production_refuses_a_missing_secret() -> None:
    with pytest.raises(ConfigurationError, match=r"WINDI_JWT_SECRET of at least 32 bytes"):
        Settings(env="production", database_url=PG).check()


def test_production_refuses_a_secret_shorter_than_32_bytes() -> None:
    with pytest.raises(ConfigurationError, match=r"WINDI_JWT_SECRET of at least 32 bytes"):
        Settings(env="production", database_url=PG, jwt_secret="s" * 31).check()


def test_production_accepts_a_secret_of_32_bytes() -> None:
    Settings(env="production", database_url=PG, jwt_secret=LONG_SECRET).check()


def test_the_secret_length_is_counted_in_bytes_not_characters() -> None:
    Settings(env="production", database_url=PG, jwt_secret="é" * 16).check()  # 16 characters, 32 bytes


def test_production_refuses_the_sqlite_default() -> None:
    with pytest.raises(ConfigurationError, match="WINDI_ALLOW_SQLITE_IN_PRODUCTION=true"):
        Settings(env="production", jwt_secret=LONG_SECRET).check()


def test_production_runs_on_sqlite_when_explicitly_allowed() -> None:
    settings = Settings.from_env(
        environ={
            "WINDI_ENV": "production",
            "WINDI_JWT_SECRET": LONG_SECRET,
            "WINDI_ALLOW_SQLITE_IN_PRODUCTION": "true",
        },
        env_file=None,
    )
    settings.check()
    assert settings.is_sqlite


def test_development_accepts_no_secret_and_sqlite() -> None:
    Settings().check()


def windi_chat_cli(cwd: Path, *args: str, **windi: str) -> subprocess.CompletedProcess[str]:
    """Run the command line in ``cwd`` with only the ``WINDI_*`` variables given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WINDI_")}
    return subprocess.run(
        [sys.executable, "-m", "windi_chat.cli", *args],
        env={**env, **windi},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def unwrapped(stderr: str) -> str:
    """The CLI's error text on one line, without the box and line breaks rich-click may draw."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stderr).split())


@pytest.mark.parametrize(
    ("windi", "message"),
    [
        pytest.param({}, "WINDI_JWT_SECRET of at least 32 bytes", id="missing-secret"),
        pytest.param(
            {"WINDI_JWT_SECRET": "short"}, "WINDI_JWT_SECRET of at least 32 bytes", id="short-secret"
        ),
        pytest.param({"WINDI_JWT_SECRET": TEST_SECRET}, "WINDI_ALLOW_SQLITE_IN_PRODUCTION", id="sqlite"),
    ],
)
def test_run_in_production_refuses_unsafe_settings_with_a_message_not_a_traceback(
    tmp_path: Path, windi: dict[str, str], message: str
) -> None:
    result = windi_chat_cli(tmp_path, "run", "--port", "1", WINDI_ENV="production", **windi)
    assert result.returncode != 0
    assert message in unwrapped(result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".windi_jwt_secret").exists()


def test_run_refuses_several_workers_with_in_process_channels(tmp_path: Path) -> None:
    result = windi_chat_cli(
        tmp_path,
        "run",
        "--port",
        "1",
        "--workers",
        "2",
        WINDI_JWT_SECRET=TEST_SECRET,
        WINDI_CHANNELS_URL="memory://",
    )
    assert result.returncode != 0
    assert "delivers within one process only: use --workers 1" in unwrapped(result.stderr)
    assert "Traceback" not in result.stderr


# --- The development secret ---


def test_development_without_a_secret_generates_one_into_the_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt_secret"
    secret = Settings(jwt_secret_file=str(secret_file)).resolve_jwt_secret()
    assert len(secret.encode()) >= 32
    assert secret_file.read_text().strip() == secret


def test_the_generated_secret_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt_secret"
    Settings(jwt_secret_file=str(secret_file)).resolve_jwt_secret()
    assert secret_file.stat().st_mode & 0o077 == 0


def test_the_development_secret_is_reused_on_the_next_start(tmp_path: Path) -> None:
    settings = Settings(jwt_secret_file=str(tmp_path / "jwt_secret"))
    assert settings.resolve_jwt_secret() == settings.resolve_jwt_secret()


def test_generating_and_reusing_the_development_secret_is_logged(
    tmp_path: Path, config_logs: pytest.LogCaptureFixture
) -> None:
    secret_file = tmp_path / "jwt_secret"
    settings = Settings(jwt_secret_file=str(secret_file))
    secret = settings.resolve_jwt_secret()
    settings.resolve_jwt_secret()
    messages = [record.getMessage() for record in config_logs.records]
    assert any("generated a development secret" in m and str(secret_file) in m for m in messages)
    assert any("Using the development JWT secret kept in" in m and str(secret_file) in m for m in messages)
    assert secret not in config_logs.text


def test_a_configured_secret_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt_secret"
    assert (
        Settings(jwt_secret=TEST_SECRET, jwt_secret_file=str(secret_file)).resolve_jwt_secret() == TEST_SECRET
    )
    assert not secret_file.exists()


def test_a_short_secret_in_development_is_used_with_a_warning(
    tmp_path: Path, config_logs: pytest.LogCaptureFixture
) -> None:
    settings = Settings(jwt_secret="short", jwt_secret_file=str(tmp_path / "jwt_secret"))
    assert settings.resolve_jwt_secret() == "short"
    assert any(
        r.levelno == logging.WARNING and "shorter than 32 bytes" in r.getMessage()
        for r in config_logs.records
    )


def test_resolving_the_secret_in_production_applies_the_checks(tmp_path: Path) -> None:
    settings = Settings(env="production", database_url=PG, jwt_secret_file=str(tmp_path / "jwt_secret"))
    with pytest.raises(ConfigurationError):
        settings.resolve_jwt_secret()
    assert not (tmp_path / "jwt_secret").exists()


# --- Log format ---


def test_logs_are_text_in_development_by_default() -> None:
    assert Settings().effective_log_format == "text"


def test_logs_are_json_in_production_by_default() -> None:
    assert Settings(env="production").effective_log_format == "json"


def test_an_explicit_log_format_wins_over_the_default() -> None:
    assert Settings(env="production", log_format="text").effective_log_format == "text"
    assert Settings(log_format="json").effective_log_format == "json"


def test_the_logging_config_uses_the_chosen_format() -> None:
    config = logging_dict("DEBUG", "json")
    assert config["handlers"]["console"]["formatter"] == "json"
    assert config["loggers"]["windi_chat"]["level"] == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WINDI_WS_SEND_TIMEOUT", "0"),
        ("WINDI_WS_SEND_TIMEOUT", "-1"),
        ("WINDI_WS_SOCKET_BACKLOG", "0"),
        ("WINDI_WS_CATCH_UP_LIMIT", "0"),
        ("WINDI_WS_CATCH_UP_LIMIT", "100001"),
        ("WINDI_WS_CLOSE_TIMEOUT", "0"),
        ("WINDI_WS_CLOSE_TIMEOUT", "soon"),
        ("WINDI_HTTP_HEADER_TIMEOUT", "0"),
        ("WINDI_MAX_CONNECTIONS", "-1"),
        ("WINDI_DB_POOL_SIZE", "0"),
        ("WINDI_DB_MAX_OVERFLOW", "-1"),
        ("WINDI_DB_POOL_TIMEOUT", "0"),
    ],
)
def test_socket_limits_must_be_positive(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({name: value}, env_file=None)


# --- Allowed origins ---


def test_allowed_origins_are_read_as_browsers_send_them() -> None:
    settings = Settings.from_env(
        {"WINDI_ALLOWED_ORIGINS": " https://App.Example:443, http://localhost:3000,,https://[::1]:8443 "},
        env_file=None,
    )
    assert settings.origins == ("https://app.example", "http://localhost:3000", "https://[::1]:8443")


def test_no_allowed_origins_by_default() -> None:
    assert Settings().origins == ()


@pytest.mark.parametrize(
    "entry",
    [
        "*",
        "https://*.example.com",
        "app.example",
        "https://app.example/",
        "https://app.example/path",
        "https://app.example?x=1",
        "ftp://app.example",
        "https://user@app.example",
        "https://app.example:99999",
        "https://app example",
        "null",
    ],
)
def test_an_entry_that_is_not_an_origin_is_refused_naming_it(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="WINDI_ALLOWED_ORIGINS") as refused:
        Settings.from_env({"WINDI_ALLOWED_ORIGINS": f"https://ok.example,{entry}"}, env_file=None)
    assert repr(entry) in str(refused.value)


@pytest.mark.parametrize("freeze", [True, False])
def test_startup_freezes_its_heap_out_of_later_collections_unless_told_not_to(
    database_url: str, freeze: bool
) -> None:
    gc.unfreeze()
    try:
        with TestClient(app=create_app(make_settings(database_url, gc_freeze=freeze))) as client:
            assert client.get("/health").status_code == 200
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # this process starts many apps: keep none of them for good
    assert (frozen > 10_000) is freeze
