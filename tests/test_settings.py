from __future__ import annotations

from pathlib import Path

import pytest

from service.db.url import DatabaseUrlError, async_url
from service.settings import DEV_SECRET, Settings, SettingsError


def test_settings_read_from_the_given_environment_only() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:p@db:5432/m",
            "METERING_PORT": "9000",
            "METERING_JSON_LOGS": "false",
            "METERING_DATA_DIR": "/tmp/x",
            "METERING_GROUP_COMMIT_WINDOW_MS": "1.5",
        }
    )
    assert settings.database_url == "postgresql://u:p@db:5432/m"
    assert settings.port == 9000
    assert settings.json_logs is False
    assert settings.data_dir == Path("/tmp/x")
    assert settings.group_commit_window_ms == 1.5
    assert Settings.from_env({}).uses_embedded_database


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="METERING_PORT"):
        Settings.from_env({"METERING_PORT": "eighty"})
    with pytest.raises(SettingsError, match="LATE_ARRIVAL"):
        Settings.from_env({"METERING_RETENTION_DAYS": "10"})
    with pytest.raises(SettingsError, match="METERING_WEBHOOK_RETENTION_DAYS"):
        Settings.from_env({"METERING_WEBHOOK_RETENTION_DAYS": "0"})
    assert Settings.from_env({}).webhook_retention_days == 30


def test_database_url_forms() -> None:
    assert async_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(DatabaseUrlError):
        async_url("mysql://u@h/db")


def test_worker_garbage_collector_tuning() -> None:
    import gc

    from service.app import tune_garbage_collector

    before = gc.get_threshold()
    try:
        tune_garbage_collector(0)
        assert gc.get_threshold() == before
        tune_garbage_collector(20_000)
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_request_connections_carry_statement_lock_and_command_timeouts() -> None:
    from service.db.session import connect_args

    settings = Settings.from_env(
        {
            "METERING_DB_STATEMENT_TIMEOUT_SECONDS": "2.5",
            "METERING_DB_LOCK_TIMEOUT_SECONDS": "1",
            "METERING_DB_COMMAND_TIMEOUT_SECONDS": "3",
        }
    )
    args = connect_args(settings)
    assert args["server_settings"]["statement_timeout"] == "2500"
    assert args["server_settings"]["lock_timeout"] == "1000"
    assert args["command_timeout"] == 3.0
    defaults = connect_args(Settings())
    assert defaults["server_settings"]["statement_timeout"] == "5000"
    assert defaults["command_timeout"] == 6.0
    # Maintenance (rollup rebuilds): no statement limit unless asked for.
    unbounded = connect_args(Settings(), statement_timeout=0, command_timeout=0)
    assert unbounded["server_settings"]["statement_timeout"] == "0"
    assert unbounded["command_timeout"] is None
    with pytest.raises(SettingsError, match="METERING_DB_LOCK_TIMEOUT_SECONDS"):
        Settings.from_env({"METERING_DB_LOCK_TIMEOUT_SECONDS": "-1"})
    with pytest.raises(SettingsError, match="METERING_READINESS_TIMEOUT_SECONDS"):
        Settings.from_env({"METERING_READINESS_TIMEOUT_SECONDS": "0"})


def test_the_environment_follows_the_database_unless_set() -> None:
    assert Settings.from_env({}).environment == "development"
    assert Settings.from_env({"DATABASE_URL": "postgresql://h/db"}).environment == "production"
    assert (
        Settings.from_env(
            {"DATABASE_URL": "postgresql://h/db", "METERING_ENV": "development"}
        ).environment
        == "development"
    )
    assert Settings.from_env({"METERING_ENV": "production"}).environment == "production"
    with pytest.raises(SettingsError, match="METERING_ENV"):
        Settings.from_env({"METERING_ENV": "staging"})


@pytest.mark.parametrize(
    "secret", [DEV_SECRET, "", "REPLACE_ME", "REPLACE_ME_with_a_long_random_value"]
)
def test_production_refuses_a_default_or_placeholder_secret(secret: str) -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://h/db", "METERING_SECRET_KEY": secret}
    )
    with pytest.raises(SettingsError) as refused:
        settings.require_real_secret()
    message = str(refused.value)
    assert "METERING_SECRET_KEY" in message
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in message


def test_development_and_real_secrets_are_accepted() -> None:
    Settings.from_env({}).require_real_secret()  # embedded database: development
    Settings.from_env(
        {"DATABASE_URL": "postgresql://h/db", "METERING_SECRET_KEY": "x" * 43}
    ).require_real_secret()


def test_json_logs_go_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """Containers' log collectors read stdout; deploy/README.md says so."""
    import json

    import structlog

    from service.common.logging import configure_logging

    saved = structlog.get_config()
    try:
        configure_logging(Settings(json_logs=True, log_level="INFO"))
        structlog.get_logger("test").info("hello", n=1)
    finally:
        structlog.configure(**saved)
    captured = capsys.readouterr()
    assert captured.err == ""
    line = json.loads(captured.out.strip().splitlines()[-1])
    assert (line["event"], line["n"], line["level"]) == ("hello", 1, "info")
