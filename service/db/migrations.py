"""Run Alembic programmatically with the service's own database URL."""

from __future__ import annotations

from alembic.config import Config

from alembic import command
from service.paths import ALEMBIC_INI


def alembic_config(database_url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
