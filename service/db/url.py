"""Turn the user's postgresql:// URL into the forms our drivers want."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


class DatabaseUrlError(ValueError):
    """DATABASE_URL is not a PostgreSQL URL."""


def async_url(url: str) -> URL:
    """postgresql://… (or postgres://, postgresql+asyncpg://) → SQLAlchemy URL for asyncpg."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseUrlError(f"DATABASE_URL must be a postgresql:// URL, got {parsed.drivername}")
    return parsed.set(drivername="postgresql+asyncpg")


def asyncpg_dsn(url: str) -> str:
    """A DSN asyncpg.connect() accepts directly (no SQLAlchemy driver suffix)."""
    return async_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
