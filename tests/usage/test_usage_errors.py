"""Every way a usage query can be wrong gets a problem+json answer naming the field; keys see
only what their scope and tenant binding allow."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from service.app import create_app
from tests.conftest import Keys, make_settings
from tests.support.in_loop import in_loop_client
from tests.usage.conftest import Client, usage

pytestmark = pytest.mark.usefixtures("world")

DAY = {"tenant_id": "acme", "from_": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # name, parameters over DAY, field, words the message must contain
    ("from not on a quarter hour", {"from_": "2026-11-01T00:07:00Z"}, "from", "15-minute"),
    ("to with seconds", {"to": "2026-11-02T00:00:30Z"}, "to", "15-minute"),
    ("from without offset", {"from_": "2026-11-01T00:00:00"}, "from", "offset"),
    ("to not a time", {"to": "tomorrow"}, "to", "RFC 3339"),
    ("from equals to", {"to": "2026-11-01T00:00:00Z"}, "to", "after"),
    ("from after to", {"from_": "2026-11-03T00:00:00Z"}, "to", "after"),
    ("unknown window size", {"window_size": "week"}, "window_size", "week"),
    ("unknown zone", {"timezone": "Mars/Olympus_Mons"}, "timezone", "IANA"),
    # Too long for a file name: zoneinfo's OSError once answered 503 database_unavailable.
    ("zone name of 256 characters", {"timezone": "A" * 256}, "timezone", "IANA"),
    ("zone name with a NUL", {"timezone": "Europe/Ber\x00lin"}, "timezone", "NUL"),
    # Files zoneinfo loads that are not IANA zones.
    ("server's local zone", {"timezone": "localtime"}, "timezone", "IANA"),
    ("Factory zone", {"timezone": "Factory"}, "timezone", "IANA"),
    ("posixrules", {"timezone": "posixrules"}, "timezone", "IANA"),
    ("zone counting leap seconds", {"timezone": "right/UTC"}, "timezone", "IANA"),
    ("misspelt group_by", {"groupby": "model"}, "groupby", "unknown query parameter"),
    ("unknown group key", {"group_by": "colour"}, "group_by", "colour"),
    ("undeclared dimension", {"meter": "api_calls", "group_by": "region"}, "group_by", "region"),
    ("unknown filter key", {"filter": "colour:red"}, "filter", "colour"),
    ("filter without colon", {"filter": "model"}, "filter", "key:value"),
    ("filter without value", {"filter": "model:"}, "filter", "key:value"),
    ("unknown meter", {"meter": "nope"}, "meter", "nope"),
    (
        "too many windows",
        {"window_size": "hour", "to": "2028-01-01T00:00:00Z"},
        "window_size",
        "10000",
    ),
    (
        "window not on a quarter hour (local mean time)",
        {
            "window_size": "day",
            "from_": "1890-01-01T00:00:00Z",
            "to": "1890-01-05T00:00:00Z",
        },
        "timezone",
        "15-minute",
    ),
    ("tenant_id missing for an unbound key", {"tenant_id": ""}, "tenant_id", "required"),
    ("from before the calendar", {"from_": "0001-01-01T00:00:00Z"}, "from", "years"),
    ("to past the calendar", {"to": "9999-12-31T23:00:00-05:00"}, "to", "years"),
    (
        "months at the start of the calendar",
        {"from_": "0001-01-02T00:00:00Z", "to": "0001-03-01T00:00:00Z", "window_size": "month"},
        "from",
        "calendar",
    ),
]


@pytest.mark.parametrize(("name", "overrides", "field", "words"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_query_is_422_naming_the_field(
    client: Client,
    reader: dict[str, str],
    name: str,
    overrides: dict[str, Any],
    field: str,
    words: str,
) -> None:
    params = {**DAY, **overrides}
    params = {k: v for k, v in params.items() if v != ""}
    problem = await usage(client, reader, 422, **params)
    assert problem["code"] == "validation_error"
    assert problem["status"] == 422
    fields = [e["field"] for e in problem.get("errors") or []]
    assert field in fields, problem
    assert words in problem["detail"], problem


async def test_missing_from_is_422(client: Client, reader: dict[str, str]) -> None:
    problem = await usage(client, reader, 422, tenant_id="acme", to="2026-11-02T00:00:00Z")
    assert "from" in problem["detail"]


async def test_problems_are_problem_json_and_reported_together(
    client: Client, reader: dict[str, str]
) -> None:
    response = await client.get(
        "/v1/usage",
        params=[
            ("tenant_id", "acme"),
            ("from", "2026-11-01T00:05:00Z"),
            ("to", "soon"),
            ("filter", "nonsense"),
        ],
        headers=reader,
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"from", "to", "filter"}


async def test_summary_validates_the_same_way(client: Client, reader: dict[str, str]) -> None:
    response = await client.get(
        "/v1/usage/summary",
        params={"tenant_id": "acme", "from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:00Z"},
        headers=reader,
    )
    assert response.status_code == 422, response.text
    response = await client.get(
        "/v1/usage/summary",
        params=[
            ("tenant_id", "acme"),
            ("from", "2026-11-01T00:00:00Z"),
            ("to", "2026-11-02T00:00:00Z"),
            ("group_by", "tier"),
            ("group_by", "shoe_size"),
        ],
        headers=reader,
    )
    assert response.status_code == 422, response.text
    assert "shoe_size" in response.json()["detail"]


async def test_summary_refuses_parameters_it_does_not_take(
    client: Client, reader: dict[str, str]
) -> None:
    """`meter` and `window_size` belong to /v1/usage: the summary used to drop them silently
    and answer every meter's totals. (`timezone` it takes: the zone `period` is resolved in.)"""
    for name, value in (("meter", "api_calls"), ("window_size", "day")):
        response = await client.get(
            "/v1/usage/summary",
            params={"tenant_id": "acme", "from": DAY["from_"], "to": DAY["to"], name: value},
            headers=reader,
        )
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [name]


async def test_zones_that_stay_valid(client: Client, reader: dict[str, str]) -> None:
    for zone in ("UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires"):
        answer = await usage(client, reader, 200, **{**DAY, "timezone": zone})
        assert answer["timezone"] == zone


async def test_unknown_tenant_is_404(client: Client, reader: dict[str, str]) -> None:
    problem = await usage(client, reader, 404, **{**DAY, "tenant_id": "ghost"})
    assert problem["code"] == "not_found"


async def test_scopes_and_tenant_binding(client: Client, keys: Keys) -> None:
    for scope in ("read", "billing", "admin"):
        await usage(client, await keys.make(scope), 200, **DAY)
    await usage(client, await keys.make("ingest"), 403, **DAY)
    await usage(client, {}, 401, **DAY)
    bound = await keys.make("read", tenant_id="acme")
    await usage(client, bound, 200, **DAY)
    # A tenant-bound key may leave tenant_id out...
    answer = await usage(client, bound, 200, **{k: v for k, v in DAY.items() if k != "tenant_id"})
    assert answer["tenant_id"] == "acme"
    # ...and never reads another tenant, even one that does not exist or with a bad query.
    for other in ("globex", "ghost"):
        problem = await usage(client, bound, 403, **{**DAY, "tenant_id": other})
        assert problem["code"] == "forbidden"
    await usage(client, bound, 403, **{**DAY, "tenant_id": "globex", "group_by": "colour"})


async def test_a_read_cut_short_by_the_statement_timeout_is_query_timeout_not_an_outage(
    world: dict[str, int], pg_pool: asyncpg.Pool, database_url: str, reader: dict[str, str]
) -> None:
    """300,000 unfolded 15-minute rows to aggregate by user and hour cannot be read within a
    50 ms statement timeout: 503 `query_timeout` naming the setting, while the database answers
    (the same app's next small query succeeds)."""
    await pg_pool.execute(
        """
        INSERT INTO rollup_rows (tenant_id, meter_ids, bucket_start, org_id, project_id,
                                 api_key_id, user_id, model, dimensions, sums, count,
                                 last_values, last_ts, last_event_id)
        SELECT 'acme', ARRAY[$1::int],
               TIMESTAMPTZ '2026-06-01 00:00+00' + (n % 2880) * INTERVAL '15 min',
               '', '', '', 'u' || (n / 2880), '', '{}', ARRAY[n::numeric], 1, ARRAY[n::numeric],
               TIMESTAMPTZ '2026-06-01 00:00+00' + (n % 2880) * INTERVAL '15 min', n
        FROM generate_series(1, 300000) AS n
        """,
        world["input_tokens"],
    )
    settings = make_settings(database_url, db_statement_timeout_seconds=0.05)
    async with in_loop_client(create_app(settings)) as client:
        heavy = await client.get(
            "/v1/usage",
            params={
                "tenant_id": "acme",
                "meter": "input_tokens",
                "from": "2026-06-01T00:00:00Z",
                "to": "2026-07-01T00:00:00Z",
                "window_size": "hour",
                "timezone": "UTC",
                "group_by": "user_id",
            },
            headers=reader,
        )
        assert heavy.status_code == 503, heavy.text
        assert heavy.json()["code"] == "query_timeout"
        assert "METERING_DB_STATEMENT_TIMEOUT_SECONDS" in heavy.json()["detail"]
        small = await client.get(
            "/v1/usage",
            params={
                "tenant_id": "acme",
                "meter": "input_tokens",
                "from": "2026-08-01T00:00:00Z",
                "to": "2026-08-02T00:00:00Z",
            },
            headers=reader,
        )
        assert small.status_code == 200, small.text
