"""One frozen settings object, read from the environment when asked (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "METERING_"
DEV_SECRET = "dev-only-secret-change-me"
# Secrets nobody chose: the development default, deploy/docker-compose.yml's default and the
# REPLACE_ME… placeholder of deploy/k8s/secret.yaml. Anyone can read them here.
PLACEHOLDER_SECRETS = frozenset({DEV_SECRET, "compose-dev-secret-change-me", ""})
PLACEHOLDER_PREFIX = "REPLACE_ME"
MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
ENVIRONMENTS = ("development", "production")


class SettingsError(ValueError):
    """A setting in the environment has a value we cannot use."""


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Settings:
    # Connection string in the usual postgresql://user:pass@host:port/db form. Empty means
    # "use the embedded PostgreSQL kept under data_dir".
    database_url: str = ""
    data_dir: Path = Path(".data")
    # development | production. Empty: development with the embedded PostgreSQL (make run),
    # production with a DATABASE_URL, so a deployment is safe without setting it.
    env: str = ""
    secret_key: str = DEV_SECRET
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = field(default_factory=_default_workers)
    log_level: str = "INFO"
    # Allocations between young-generation collections in serve's workers (0: Python default).
    gc_threshold: int = 20_000
    json_logs: bool = True
    db_pool_size: int = 10
    db_pool_timeout_seconds: float = 5.0
    # Bounds on one statement of a request, so a stuck database gives a 503 instead of a hang.
    # The server cancels a statement after statement_timeout (and a lock wait after
    # lock_timeout); the client gives up after command_timeout even when the server does not
    # answer at all (frozen, network gone). 0 disables each.
    db_statement_timeout_seconds: float = 5.0
    db_lock_timeout_seconds: float = 3.0
    db_command_timeout_seconds: float = 6.0
    # Rollup rebuilds run for as long as their range needs: no statement timeout by default.
    # Retention and migrations open their own connections (retention: bounded batches;
    # migrations: alembic/env.py sets a lock_timeout) and are not affected by the above.
    db_maintenance_statement_timeout_seconds: float = 0.0
    # /readyz answers 503 when the database has not answered its check within this.
    readiness_timeout_seconds: float = 2.0
    max_body_bytes: int = 2_000_000
    api_key_cache_seconds: float = 5.0
    # Tenants and meters as seen by ingestion are refreshed this often.
    reference_cache_seconds: float = 5.0
    # Ingestion
    batch_max_events: int = 1000
    late_arrival_days: int = 35
    future_tolerance_seconds: int = 300
    # Measured with wrk at 64 connections on 2 cores: 1 ms gave ~5,200 req/s, 2 ms ~4,700.
    group_commit_window_ms: float = 1.0
    group_commit_max_events: int = 512
    # Group commits in flight at once per process (each holds one pooled connection).
    group_commit_flushers: int = 2
    # Retention
    retention_days: int = 400
    retention_batch_size: int = 5000
    # Paused after every retention_batch_size rows deleted. While the P1 ingest load runs, 5,000
    # rows take ~30 ms to delete; a 10 ms pause then gave 123,000-130,000 rows/s deleted with
    # ingestion at 76-87 % of its rate alone (make bench-retention; 20 ms gave ~93,000 rows/s).
    retention_pause_seconds: float = 0.01
    retention_interval_seconds: float = 3600.0
    # Delivered and failed webhook messages (with their attempts) older than this are deleted
    # by the retention run; pending ones never are.
    webhook_retention_days: int = 30
    # Rollups: how often each worker tries to fold finished 15-minute rollups into the hour,
    # day and month levels (0: never; then run `python -m service rollups fold` on a schedule).
    # Reads stay exact either way; unfolded rows only make long ranges slower to read.
    rollup_fold_interval_seconds: float = 60.0
    # Webhooks. Receivers on private, loopback or link-local addresses are refused unless this
    # is true (local development and tests): otherwise an admin could make the service post to
    # its own network's internals.
    webhook_allow_private: bool = False
    # How often each worker looks for due deliveries (0: this worker never sends).
    webhook_send_interval_seconds: float = 0.5
    webhook_timeout_seconds: float = 10.0
    # Due deliveries one sender claims (and posts concurrently) per transaction, and senders
    # per worker: a slow receiver holds up only its own sender's batch.
    webhook_batch_size: int = 100
    webhook_senders: int = 2
    # Waits before each retry, in seconds: the first within 5 s, then growing, about 27.6 h in
    # all (at least a day), after which the delivery is failed. Comma-separated.
    webhook_retry_delays_seconds: str = "5,300,1800,7200,18000,36000,36000"
    # Backpressure
    rate_limit_per_second: int = 0
    rate_limit_burst: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.name
            raw = env.get("DATABASE_URL") if name == "database_url" else None
            key = ENV_PREFIX + name.upper()
            if key in env:
                raw = env[key]
            if raw is None:
                continue
            values[name] = _convert(key, raw, f.type)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.retention_days < self.late_arrival_days:
            raise SettingsError(
                f"METERING_RETENTION_DAYS ({self.retention_days}) must not be shorter than "
                f"METERING_LATE_ARRIVAL_DAYS ({self.late_arrival_days}): a re-sent event could "
                "otherwise be counted twice after its original was deleted"
            )
        if self.webhook_retention_days < 1:
            raise SettingsError("METERING_WEBHOOK_RETENTION_DAYS must be at least 1")
        if not 1 <= self.batch_max_events <= 100_000:
            raise SettingsError("METERING_BATCH_MAX_EVENTS must be between 1 and 100000")
        if self.workers < 1:
            raise SettingsError("METERING_WORKERS must be at least 1")
        if self.env and self.env not in ENVIRONMENTS:
            raise SettingsError(
                f"METERING_ENV={self.env!r} is not one of {', '.join(ENVIRONMENTS)}"
            )
        for name in (
            "db_statement_timeout_seconds",
            "db_lock_timeout_seconds",
            "db_command_timeout_seconds",
            "db_maintenance_statement_timeout_seconds",
        ):
            if getattr(self, name) < 0:
                raise SettingsError(f"METERING_{name.upper()} must be 0 (off) or positive")
        if self.webhook_batch_size < 1 or self.webhook_senders < 1:
            raise SettingsError(
                "METERING_WEBHOOK_BATCH_SIZE and METERING_WEBHOOK_SENDERS must be at least 1"
            )
        if self.webhook_timeout_seconds <= 0:
            raise SettingsError("METERING_WEBHOOK_TIMEOUT_SECONDS must be positive")
        self.webhook_retry_delays()  # raises on a malformed list
        if self.readiness_timeout_seconds <= 0:
            raise SettingsError("METERING_READINESS_TIMEOUT_SECONDS must be positive")

    def webhook_retry_delays(self) -> tuple[float, ...]:
        """The waits before each retry of a failed delivery attempt."""
        try:
            delays = tuple(
                float(part) for part in self.webhook_retry_delays_seconds.split(",") if part.strip()
            )
        except ValueError:
            delays = ()
        if not delays or any(delay <= 0 for delay in delays):
            raise SettingsError(
                "METERING_WEBHOOK_RETRY_DELAYS_SECONDS must be positive numbers separated by "
                f"commas (got {self.webhook_retry_delays_seconds!r})"
            )
        return delays

    @property
    def environment(self) -> str:
        if self.env:
            return self.env
        return "development" if self.uses_embedded_database else "production"

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def uses_placeholder_secret(self) -> bool:
        secret = self.secret_key.strip()
        return secret in PLACEHOLDER_SECRETS or secret.startswith(PLACEHOLDER_PREFIX)

    def require_real_secret(self) -> None:
        """Refuse a default or placeholder secret outside development: API keys hashed with a
        secret anyone can read in this repository can be forged. Called where the secret is
        used (serving, creating keys), not by commands that never touch it (migrate)."""
        if self.uses_placeholder_secret and not self.is_development:
            shown = repr(self.secret_key) if self.secret_key else "empty"
            raise SettingsError(
                f"METERING_SECRET_KEY is a default or placeholder ({shown}) and this is "
                f"{self.environment}; make a secret with\n    {MAKE_A_SECRET}\nand set "
                "METERING_SECRET_KEY to it (or METERING_ENV=development for a local try-out)"
            )

    @property
    def uses_embedded_database(self) -> bool:
        return not self.database_url


def _convert(key: str, raw: str, type_name: Any) -> Any:
    type_text = str(type_name)
    try:
        if type_text == "int":
            return int(raw)
        if type_text == "float":
            return float(raw)
        if type_text == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if type_text == "Path":
            return Path(raw)
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r} is not a valid {type_text}") from exc
    return raw
