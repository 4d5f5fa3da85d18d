"""Structured JSON logs (structlog), one line per event."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from service.settings import Settings


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """JSON lines on stdout (`stream`: elsewhere), as container platforms collect them. A
    command whose stdout is its output (retention run) passes stderr."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
