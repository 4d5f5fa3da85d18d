"""GET /metrics: Prometheus text, no auth; requests by route template and status, latency
histograms, pool gauges, and the ingest and retention series defined in service.common.metrics."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from service.app import create_app
from service.operations.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from tests.conftest import Keys, make_settings
from tests.support.in_loop import in_loop_client

Client = AsyncTestClient[Litestar]


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float:
    return samples(exposition).get((name, frozenset(labels.items())), 0.0)


async def scrape(client: Client) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_metrics_is_prometheus_text_without_auth(client: Client) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["content-type"].count("charset") == 1
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "metering_http_requests",
        "metering_http_request_duration_seconds",
        "metering_db_pool_connections_in_use",
        "metering_db_pool_waiting_requests",
        "metering_ingest_events",
        "metering_ingest_batch_size",
        "metering_group_commit_size",
        "metering_ingest_commit_duration_seconds",
        "metering_retention_deleted_rows",
        "metering_retention_batches",
        "metering_retention_run_duration_seconds",
        "metering_retention_last_success_timestamp_seconds",
    } <= names


async def test_requests_are_counted_by_route_template_and_status(
    client: Client, keys: Keys
) -> None:
    route = "/v1/tenants/{tenant_id}"
    before = await scrape(client)
    for tenant in ("acme", "globex", "initech"):
        assert (await client.get(f"/v1/tenants/{tenant}", headers=keys.admin)).status_code == 404
    assert (await client.get("/no/such/thing")).status_code == 404
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    counted = "metering_http_requests_total"
    assert delta(counted, method="GET", route=route, status="404") == 3
    assert delta(counted, method="GET", route="unmatched", status="404") == 1
    latency = "metering_http_request_duration_seconds_count"
    assert delta(latency, method="GET", route=route) == 3
    # Raw paths never become label values: cardinality is bounded by the routes.
    assert "/v1/tenants/acme" not in after
    assert "/no/such/thing" not in after


async def test_pool_gauge_counts_checked_out_connections(database_url: str) -> None:
    app = create_app(make_settings(database_url, db_pool_size=3))
    engine = app.state.engine
    gauge = "metering_db_pool_connections_in_use"
    async with in_loop_client(app) as client:
        before = value(await scrape(client), gauge)
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            assert value(await scrape(client), gauge) == before + 2
        assert value(await scrape(client), gauge) == before


def test_serve_gets_a_fresh_multiprocess_dir(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    created = prepare_multiprocess_dir(env)
    try:
        assert env[MULTIPROC_ENV] == str(created.path)
        assert created.path.is_dir()
        assert not any(created.path.iterdir())
    finally:
        created.remove_if_created()
    assert not created.path.exists()


def test_an_operator_given_multiprocess_dir_is_emptied_but_kept(tmp_path: Path) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "README").write_text("not ours")
    prepared = prepare_multiprocess_dir({MULTIPROC_ENV: str(given)})
    prepared.remove_if_created()
    assert given.is_dir()
    assert not (given / "counter_123.db").exists()
    assert (given / "README").exists()
