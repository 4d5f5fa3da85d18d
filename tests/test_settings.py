from __future__ import annotations

from pathlib import Path

import pytest

from service.db.url import DatabaseUrlError, async_url
from service.settings import Settings, SettingsError


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
