"""GET /metrics in the Prometheus text format, correct with several worker processes.

`serve` runs uvicorn with worker processes and Prometheus scrapes whichever one answers, so
each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode) and the scrape aggregates all of them. The variable must be set before the
workers import prometheus_client: `serve` calls `prepare_metrics_for_workers` before it starts
them. Without the variable (tests, a single process) the default in-memory registry is used."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Controller, Litestar, MediaType, Request, Response, get
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class MultiprocessDir:
    path: Path
    created: bool  # True: ours to delete when serving stops

    def remove_if_created(self) -> None:
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)


def prepare_multiprocess_dir(environ: MutableMapping[str, str] | None = None) -> MultiprocessDir:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory before worker processes start.

    An operator-given directory is emptied of the previous run's files (prometheus-client
    requires this: stale files would add old counts to the new ones); without one, a fresh
    temporary directory is created."""
    env = os.environ if environ is None else environ
    if given := env.get(MULTIPROC_ENV):
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return MultiprocessDir(path, created=False)
    path = Path(tempfile.mkdtemp(prefix="metering-metrics-"))
    env[MULTIPROC_ENV] = str(path)
    return MultiprocessDir(path, created=True)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render_metrics(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition (text, or OpenMetrics when the scraper asks for it) and its media type."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class MetricsController(Controller):
    tags = ["operations"]

    @get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        media_type=MediaType.TEXT,
        sync_to_thread=False,
    )
    def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        body, content_type = render_metrics(request.headers.get("accept"))
        # The header is set as is: Litestar would append a second charset to a text/ type.
        return Response(body, headers={"content-type": content_type})


@asynccontextmanager
async def metrics_lifespan(_: Litestar) -> AsyncGenerator[None, None]:
    """When a worker stops, drop its live gauges (pool in use / waiting) from the aggregate;
    its counters and histograms stay, as they must."""
    try:
        yield
    finally:
        if multiprocess_mode():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def prepare_metrics_for_workers(workers: int) -> MultiprocessDir | None:
    """For `serve`: multiprocess mode when there are several workers (or the operator chose a
    directory). A single worker serves from this process, which may already have imported
    prometheus_client in its default mode, so it keeps the in-memory registry."""
    if workers > 1 or os.environ.get(MULTIPROC_ENV):
        return prepare_multiprocess_dir()
    return None
