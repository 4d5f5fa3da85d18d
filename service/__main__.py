"""Command line: python -m service serve | migrate | keys create | openapi …"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from service.settings import MAKE_A_SECRET, Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from service.meters.schemas import LlmPresetOut, LlmPriceImportOut
    from service.tenants.schemas import ApiKeyCreated

T = TypeVar("T")


def _settings(*, uses_secret: bool = False) -> Settings:
    """The settings from the environment; a bad one ends the command with its message.
    `uses_secret`: the command hashes API keys, so a placeholder secret is refused outside
    development (see Settings.require_real_secret)."""
    try:
        settings = Settings.from_env()
        if uses_secret:
            settings.require_real_secret()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    if uses_secret and settings.uses_placeholder_secret:
        click.echo(
            f"Warning: METERING_SECRET_KEY is a default or placeholder, accepted because this is "
            f"{settings.environment} (METERING_ENV); production refuses it. Make one with: "
            f"{MAKE_A_SECRET}",
            err=True,
        )
    return settings


def service_command(*args: str) -> str:
    """How to run `python -m service …` with this very interpreter (a bare `python` may be the
    system one, without the service's dependencies)."""
    return " ".join([shlex.quote(sys.executable), "-m", "service", *args])


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when given, else the embedded PostgreSQL under the data dir."""
    if settings.database_url:
        return settings.database_url
    from service.db.embedded import EmbeddedPostgresError, start_embedded_postgres

    click.echo(f"No DATABASE_URL: using the embedded PostgreSQL in {settings.data_dir}/", err=True)
    try:
        return start_embedded_postgres(settings.data_dir)
    except EmbeddedPostgresError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def cli() -> None:
    """Metering and billing service."""


@cli.command()
@click.option("--host", default=None, help="Interface to bind (default METERING_HOST or 127.0.0.1)")
@click.option("--port", default=None, type=int, help="Port (default METERING_PORT or 8000)")
@click.option("--workers", default=None, type=int, help="Worker processes (default: CPU count)")
@click.option("--migrate/--no-migrate", default=False, help="Apply migrations before serving")
def serve(host: str | None, port: int | None, workers: int | None, migrate: bool) -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = _settings(uses_secret=True)
    url = resolve_database_url(settings)
    if migrate:
        from service.db.migrations import upgrade_to_head

        upgrade_to_head(url)
    # Worker processes build their app from the environment: hand them the resolved URL.
    os.environ["DATABASE_URL"] = url
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    from service.operations.metrics import prepare_metrics_for_workers

    # Before any worker starts: they pick prometheus-client's multiprocess mode at import.
    metrics_dir = prepare_metrics_for_workers(workers)
    click.echo(
        f"Serving on http://{host}:{port} with {workers} worker(s); API docs at "
        f"http://{host}:{port}/docs\n"
        "First admin key: "
        + service_command("keys", "create", "--scope", "admin", "--name", "bootstrap"),
        err=True,
    )
    try:
        uvicorn.run(
            "service.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            access_log=False,
            loop="uvloop" if sys.platform != "win32" else "asyncio",
            http="httptools",
        )
    finally:
        if metrics_dir is not None:
            metrics_dir.remove_if_created()


@cli.command()
def migrate() -> None:
    """Apply database migrations up to head."""
    from service.db.migrations import upgrade_to_head

    url = resolve_database_url(_settings())
    upgrade_to_head(url)
    click.echo("Migrations applied: database at head.", err=True)


@cli.group()
def db() -> None:
    """The embedded PostgreSQL (used when DATABASE_URL is empty)."""


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL under METERING_DATA_DIR (it keeps running after `serve`
    ends, shared by every command); its data stays, and the next command starts it again."""
    from service.db.embedded import EmbeddedPostgresError, pgdata_of, stop_embedded_postgres

    settings = _settings()
    if settings.database_url:
        raise click.ClickException(
            "DATABASE_URL is set: that server is not the embedded one; stop it where it runs"
        )
    try:
        stopped = stop_embedded_postgres(settings.data_dir)
    except EmbeddedPostgresError as exc:
        raise click.ClickException(str(exc)) from exc
    where = pgdata_of(settings.data_dir)
    if stopped:
        click.echo(f"Stopped the embedded PostgreSQL in {where}.")
    else:
        click.echo(f"No embedded PostgreSQL is running in {where}.")


@cli.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["admin", "ingest", "read", "billing"]),
    help="Scope to grant (repeat for several)",
)
@click.option("--name", required=True, help="A name to recognise the key by")
@click.option("--tenant", "tenant_id", default=None, help="Bind the key to one tenant")
def create_key(scopes: tuple[str, ...], name: str, tenant_id: str | None) -> None:
    """Create an API key and print it once, alone on the last line of stdout."""
    from service.common.errors import ServiceError

    settings = _settings(uses_secret=True)
    url = resolve_database_url(settings)
    try:
        created = asyncio.run(_create_key(settings, url, list(scopes), name, tenant_id))
    except ServiceError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"Created API key {created.id} ({', '.join(created.scopes)}). It is shown once:")
    click.echo(created.key)


async def _create_key(
    settings: Settings, url: str, scopes: list[str], name: str, tenant_id: str | None
) -> ApiKeyCreated:
    from service.db.session import create_engine, create_sessionmaker
    from service.tenants.schemas import ApiKeyCreate
    from service.tenants.service import ApiKeyService

    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await ApiKeyService(session, settings).create(
                ApiKeyCreate(name=name, scopes=scopes, tenant_id=tenant_id)  # type: ignore[arg-type]
            )
    finally:
        await engine.dispose()


@cli.group()
def rollups() -> None:
    """Maintain the pre-aggregated usage rollups."""


@rollups.command("rebuild")
@click.option("--tenant", "tenant_id", required=True, help="Tenant whose rollups to rebuild")
@click.option("--from", "start", required=True, help="Start (RFC 3339, on a 15-minute boundary)")
@click.option("--to", "end", required=True, help="End, exclusive (RFC 3339)")
def rebuild_rollups_command(tenant_id: str, start: str, end: str) -> None:
    """Recompute a tenant's rollups in [from, to) from raw events (ingestion into the events
    table waits while it runs)."""
    from datetime import datetime

    from service.common.errors import ServiceError
    from service.common.progress import Progress
    from service.db.session import create_maintenance_engine
    from service.operations.progress import terminal_progress
    from service.rollups.rebuild import rebuild_tenant_rollups

    settings = _settings()
    url = resolve_database_url(settings)
    try:
        start_at = datetime.fromisoformat(start.replace("Z", "+00:00"))
        end_at = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an RFC 3339 time: {exc}") from exc

    async def run(progress: Progress) -> None:
        engine = create_maintenance_engine(settings, url)
        try:
            report = await rebuild_tenant_rollups(
                engine, settings, tenant_id, start_at, end_at, progress
            )
        finally:
            await engine.dispose()
        click.echo(
            f"Rebuilt rollups of {report.tenant_id} in [{report.start:%Y-%m-%dT%H:%MZ}, "
            f"{report.end:%Y-%m-%dT%H:%MZ}): {report.rollups_deleted} replaced by "
            f"{report.rollups_written} rollup rows; {report.rows_folded} rows folded into the "
            "hour to month levels."
        )

    try:
        with terminal_progress() as progress:
            asyncio.run(run(progress))
    except ServiceError as exc:
        raise click.ClickException(exc.detail) from exc


@rollups.command("fold")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant (default: all)")
def fold_rollups_command(tenant_id: str | None) -> None:
    """Fold every pending 15-minute rollup row into the hour to month levels now (the
    server does this every METERING_ROLLUP_FOLD_INTERVAL_SECONDS; usage is exact either way,
    folding only makes long ranges fast). Prints a line per (tenant, day) folded."""
    from service.db.connections import dedicated_connection
    from service.rollups.fold import fold_rollups

    settings = _settings()
    url = resolve_database_url(settings)

    async def run() -> int:
        async with dedicated_connection(url, "metering-fold") as connection:
            return await fold_rollups(
                connection, tenant_id=tenant_id, progress=lambda line: click.echo(line, err=True)
            )

    rows = asyncio.run(run())
    click.echo(f"Folded {rows} rollup rows.")


async def _in_session(
    settings: Settings, url: str, work: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """Run `work` in one transaction, committed when it returns (like an API request)."""
    from service.db.session import create_engine, create_sessionmaker

    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


def _run_in_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from service.common.errors import ServiceError

    settings = _settings()
    url = resolve_database_url(settings)
    try:
        return asyncio.run(_in_session(settings, url, work))
    except ServiceError as exc:
        raise click.ClickException(exc.detail) from exc


@cli.group()
def meters() -> None:
    """Meter definitions."""


@meters.command("preset-llm")
@click.option("--currency", default=None, help="Currency of the created token meters (default USD)")
def meters_preset_llm(currency: str | None) -> None:
    """Create the LLM meters that are missing (as POST /v1/meters/presets/llm); idempotent."""
    from service.meters.service import MeterService

    async def work(session: AsyncSession) -> LlmPresetOut:
        return await MeterService(session).apply_llm_preset(currency)

    for meter in _run_in_session(work).meters:
        billing = f"billable, {meter.currency}" if meter.billable else "not billable"
        click.echo(f"{meter.event_name:<24} {meter.aggregation:<6} {meter.unit or '':<9} {billing}")


@cli.group()
def prices() -> None:
    """Price definitions."""


@prices.command("import-llm")
@click.option("--model", "models", multiple=True, required=True, help="Model (repeat for several)")
@click.option("--provider", default=None, help="Catalog provider id, e.g. openai, anthropic")
@click.option("--tenant", "tenant_id", default=None, help="Create this tenant's overrides")
@click.option("--effective-from", default=None, help="RFC 3339, on a 15-minute boundary")
def prices_import_llm(
    models: tuple[str, ...], provider: str | None, tenant_id: str | None, effective_from: str | None
) -> None:
    """Create per-model prices per 1,000,000 tokens from the bundled LLM price catalog (as
    POST /v1/prices/import/llm)."""
    from datetime import datetime

    import msgspec

    from service.meters.schemas import LlmPriceImport
    from service.meters.service import PriceService
    from service.operations.progress import terminal_progress

    try:
        data = msgspec.convert(
            {
                "models": list(models),
                "provider": provider,
                "tenant_id": tenant_id,
                "effective_from": None
                if effective_from is None
                else datetime.fromisoformat(effective_from.replace("Z", "+00:00")),
            },
            LlmPriceImport,
        )
    except (ValueError, msgspec.ValidationError) as exc:
        raise click.BadParameter(str(exc)) from exc

    with terminal_progress() as progress:

        async def work(session: AsyncSession) -> LlmPriceImportOut:
            return await PriceService(session).import_llm(data, progress)

        answer = _run_in_session(work)
    for price in answer.created:
        amount = (
            f"{price.unit_amount} per {price.per_units}"
            if price.relative_to is None
            else f"{price.relative_to.factor} x {price.relative_to.meter}"
        )
        click.echo(f"created   {price.match['model']:<28} {price.meter:<24} {amount} {price.id}")
    for conflict in answer.conflicts:
        click.echo(
            f"conflict  {conflict.model:<28} {conflict.meter:<24} "
            f"overlaps price {conflict.price_id}"
        )
    for model in answer.not_found:
        click.echo(f"not found {model}")


@cli.group()
def report() -> None:
    """Reports: tables for people, CSV or JSON for programs (the API's answers)."""


# The command line reads as an operator with database access: every tenant, every scope.
CLI_PRINCIPAL_SCOPES = frozenset({"admin"})
FORMAT_HELP = "table (for people), csv (every row, exact values) or json (the API's answer)"
PERIOD_HELP = "today, yesterday, 7d, 30d, this_month, last_month, YYYY-MM or YYYY-MM-DD"


@report.command("usage")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id")
@click.option(
    "--period",
    required=True,
    help="today, yesterday, 7d, 30d, this_month, last_month, YYYY-MM or YYYY-MM-DD",
)
@click.option(
    "--timezone", default=None, help="IANA zone of the period and windows (default: the tenant's)"
)
@click.option("--meter", default=None, help="One meter's event_name (default: every meter)")
@click.option(
    "--group-by", "group_by", multiple=True, help="Group by this key (repeat for several)"
)
@click.option("--filter", "filters", multiple=True, help="key:value equality filter (repeatable)")
@click.option("--window", type=click.Choice(["hour", "day", "month"]), default=None)
@click.option("--order-by", type=click.Choice(["value", "-value"]), default=None)
@click.option("--limit", type=click.IntRange(1), default=None, help="Top N rows per meter")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help=FORMAT_HELP,
)
def report_usage(
    tenant_id: str,
    period: str,
    timezone: str | None,
    meter: str | None,
    group_by: tuple[str, ...],
    filters: tuple[str, ...],
    window: str | None,
    order_by: str | None,
    limit: int | None,
    output_format: str,
) -> None:
    """A tenant's usage over a period, as GET /v1/usage answers it: one table per meter."""
    from service.common.auth import Principal
    from service.common.errors import ServiceError
    from service.db.session import create_maintenance_engine
    from service.reports.render import Format, print_report
    from service.reports.usage import usage_heading, usage_tables
    from service.usage.schemas import MetersUsageOut, UsageOut, UsageQuery
    from service.usage.service import UsageService

    settings = _settings()
    url = resolve_database_url(settings)
    query = UsageQuery(
        period=period,
        tenant_id=tenant_id,
        meter=meter,
        window_size=window,
        timezone=timezone,
        group_by=list(group_by),
        filters=list(filters),
        order_by=order_by,
        limit=limit,
    )
    principal = Principal("cli", "command line", CLI_PRINCIPAL_SCOPES, None)

    async def run() -> UsageOut | MetersUsageOut:
        # No request statement limit: a report may read a long range.
        engine = create_maintenance_engine(settings, url)
        try:
            return await UsageService(engine).usage(principal, query)
        finally:
            await engine.dispose()

    try:
        answer = asyncio.run(run())
    except ServiceError as exc:
        raise click.ClickException(exc.detail) from exc
    print_report(
        answer, usage_tables(answer), usage_heading(answer), Format(output_format), sys.stdout
    )


def _report_options(command: Any) -> Any:
    """The options every report takes: tenant, period, zone, groups, filters, window, format."""
    for option in reversed(
        [
            click.option("--tenant", "tenant_id", required=True, help="Tenant id"),
            click.option("--period", required=True, help=PERIOD_HELP),
            click.option(
                "--timezone",
                default=None,
                help="IANA zone of the period and windows (default: the tenant's)",
            ),
            click.option(
                "--group-by", "group_by", multiple=True, help="Group by this key (repeatable)"
            ),
            click.option(
                "--filter", "filters", multiple=True, help="key:value equality filter (repeatable)"
            ),
            click.option("--window", type=click.Choice(["hour", "day", "month"]), default=None),
            click.option(
                "--format",
                "output_format",
                type=click.Choice(["table", "csv", "json"]),
                default="table",
                show_default=True,
                help=FORMAT_HELP,
            ),
        ]
    ):
        command = option(command)
    return command


async def _with_session(run: Callable[[Any], Awaitable[T]]) -> T:
    """Run `run(session)` on a session of its own (no request statement limit: a report may
    read a long range), as an operator with database access."""
    from service.db.session import create_maintenance_engine, create_sessionmaker

    settings = _settings()
    engine = create_maintenance_engine(settings, resolve_database_url(settings))
    try:
        async with create_sessionmaker(engine)() as session:
            return await run(session)
    finally:
        await engine.dispose()


@report.command("costs")
@_report_options
@click.option("--meter", default=None, help="One meter's event_name (default: every billable)")
@click.option("--currency", default=None, help="ISO 4217 (default: the tenant's)")
@click.option("--order-by", type=click.Choice(["cost", "-cost"]), default=None)
@click.option("--limit", type=click.IntRange(1), default=None, help="Top N rows")
def report_costs(
    tenant_id: str,
    period: str,
    timezone: str | None,
    group_by: tuple[str, ...],
    filters: tuple[str, ...],
    window: str | None,
    output_format: str,
    meter: str | None,
    currency: str | None,
    order_by: str | None,
    limit: int | None,
) -> None:
    """A tenant's rated costs over a period, as GET /v1/costs answers them."""
    from service.common.auth import Principal
    from service.common.errors import ServiceError
    from service.costs.schemas import CostQuery
    from service.costs.service import CostService
    from service.reports.costs import costs_heading, costs_tables
    from service.reports.render import Format, print_report

    query = CostQuery(
        period=period,
        tenant_id=tenant_id,
        meter=meter,
        currency=currency,
        window_size=window,
        timezone=timezone,
        group_by=list(group_by),
        filters=list(filters),
        order_by=order_by,
        limit=limit,
    )
    principal = Principal("cli", "command line", CLI_PRINCIPAL_SCOPES, None)
    try:
        answer = asyncio.run(
            _with_session(lambda session: CostService(session).costs(principal, query))
        )
    except ServiceError as exc:
        raise click.ClickException(exc.detail) from exc
    print_report(
        answer, costs_tables(answer), costs_heading(answer), Format(output_format), sys.stdout
    )


@report.command("llm")
@_report_options
def report_llm(
    tenant_id: str,
    period: str,
    timezone: str | None,
    group_by: tuple[str, ...],
    filters: tuple[str, ...],
    window: str | None,
    output_format: str,
) -> None:
    """A tenant's LLM calls over a period (requests, tokens, cache hits, latency, cost), as
    GET /v1/reports/llm answers them."""
    from service.common.auth import Principal
    from service.common.errors import ServiceError
    from service.reports.costs import llm_heading, llm_tables
    from service.reports.render import Format, print_report
    from service.reports.schemas import LlmReportQuery
    from service.reports.service import LlmReportService

    query = LlmReportQuery(
        period=period,
        tenant_id=tenant_id,
        window_size=window,
        timezone=timezone,
        group_by=list(group_by),
        filters=list(filters),
    )
    principal = Principal("cli", "command line", CLI_PRINCIPAL_SCOPES, None)
    try:
        answer = asyncio.run(
            _with_session(lambda session: LlmReportService(session).report(principal, query))
        )
    except ServiceError as exc:
        raise click.ClickException(exc.detail) from exc
    print_report(answer, llm_tables(answer), llm_heading(answer), Format(output_format), sys.stdout)


@cli.command()
@click.option("--output", type=click.Path(path_type=Path), default=Path("openapi/openapi.json"))
def openapi(output: Path) -> None:
    """Write the OpenAPI document the code generates (the committed contract)."""
    from service.openapi import render_openapi

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_openapi())
    click.echo(f"Wrote {output}", err=True)


@cli.group()
def retention() -> None:
    """Delete raw events past their retention period (rollups and invoices are kept)."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant")
def retention_run(dry_run: bool, tenant_id: str | None) -> None:
    """Delete expired raw events in batches; one runner at a time (PostgreSQL advisory lock)."""
    import asyncpg

    from service.common.logging import configure_logging
    from service.db.url import DatabaseUrlError
    from service.operations.progress import terminal_progress
    from service.retention.schemas import TenantRetention
    from service.retention.service import RetentionError, run_retention
    from service.settings import SettingsError

    try:
        settings = _settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    url = resolve_database_url(settings)
    # stdout is the report below; the job's JSON log lines go to stderr.
    configure_logging(settings, stream=sys.stderr)

    def echo_tenant(result: TenantRetention) -> None:
        what = "would delete" if dry_run else "deleted"
        line = (
            f"{result.tenant_id}: retention {result.retention_days} days, "
            f"cutoff {result.cutoff.isoformat(timespec='seconds')}: "
        )
        if result.error:
            line += f"REFUSED: {result.error}"
        else:
            line += f"{what} {result.rows:,} events"
            if not dry_run:
                line += f" in {result.batches:,} batches, {result.seconds:.1f} s"
        click.echo(line)

    try:
        with terminal_progress() as progress:
            report = asyncio.run(
                run_retention(
                    settings,
                    url,
                    dry_run=dry_run,
                    tenant_id=tenant_id,
                    on_tenant=echo_tenant,
                    progress=progress,
                )
            )
    except (RetentionError, DatabaseUrlError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise click.ClickException(f"retention run failed: {exc}") from exc
    if report.skipped:
        click.echo("Another process holds the retention lock and is running it: nothing to do.")
        return
    tenants = f"{len(report.tenants)} tenant(s)"
    if report.webhook_deliveries is not None:
        deliveries = report.webhook_deliveries
        click.echo(
            f"webhook deliveries: retention {deliveries.retention_days} days, cutoff "
            f"{deliveries.cutoff.isoformat(timespec='seconds')}: "
            f"{'would delete' if dry_run else 'deleted'} {deliveries.rows:,} delivered or "
            "failed messages (pending ones are kept)"
        )
    if dry_run:
        click.echo(f"Dry run: would delete {report.rows:,} raw events of {tenants}; deleted none.")
    else:
        click.echo(
            f"Deleted {report.rows:,} raw events of {tenants} in {report.batches:,} batches, "
            f"{report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s); "
            "rollups and invoices untouched."
        )
    if not report.ok:
        raise click.ClickException(
            f"retention refused for {len(report.errors)} tenant(s), see above"
        )


if __name__ == "__main__":
    cli()
