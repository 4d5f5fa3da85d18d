"""`max` and `unique_count` meters against naive computations over raw events.

For random events of a max meter and of two unique_count meters (one counting users, one a
dimension) around DST changes and month ends in awkward zones (+05:45 included), stored in
several statements with folds in between (so reads mix cube cells and pending rows), random
queries answer what the raw events give: the largest value per window and group, and the
number of distinct values per window and group (a value seen in several buckets, days or
levels counted once; events without the key count nothing). A rebuild from the raw events
then gives the same answers.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.events.repository import EventRow, store_events
from service.rollups.fold import fold_rollups
from service.rollups.upkeep import rebuild_rollups
from tests.usage.conftest import TENANTS, Client, usage
from tests.usage.test_usage_matches_naive import ANCHORS, ATTRIBUTION, POOLS, ZONES, naive_window

QUARTER = timedelta(minutes=15)
# event_name -> (aggregation, dimensions, unique_key)
AGG_METERS = {
    "peak_sessions": ("max", ["region"], None),
    "active_users": ("unique_count", ["region"], "user_id"),
    "active_regions": ("unique_count", ["region", "tier"], "region"),
}


@pytest.fixture
async def agg_meters(world: dict[str, int], pg_pool: asyncpg.Pool) -> dict[str, int]:
    ids = dict(world)
    for name, (aggregation, dimensions, unique_key) in AGG_METERS.items():
        ids[name] = await pg_pool.fetchval(
            "INSERT INTO meters (event_name, name, aggregation, dimensions, currency, unit, "
            "unique_key) VALUES ($1, $1, $2, $3, 'USD', 'units', $4) RETURNING id",
            name,
            aggregation,
            dimensions,
            unique_key,
        )
    return ids


def event_row(meter_ids: dict[str, int], event: dict[str, Any]) -> EventRow:
    attribution = event["attribution"]
    return EventRow(
        tenant_id=event["tenant_id"],
        meter_id=meter_ids[event["meter"]],
        idempotency_key=event["key"],
        payload_hash=hashlib.sha256(event["key"].encode()).digest(),
        value=event["value"],
        ts=event["ts"],
        org_id=attribution.get("org_id"),
        project_id=attribution.get("project_id"),
        api_key_id=attribution.get("api_key_id"),
        user_id=attribution.get("user_id"),
        model=attribution.get("model"),
        dimensions_json=json.dumps(event["dimensions"]),
        metadata_json=None,
        has_max=AGG_METERS[event["meter"]][0] == "max",
    )


def key_value(event: dict[str, Any], key: str) -> str | None:
    if key in ATTRIBUTION:
        return event["attribution"].get(key)  # type: ignore[no-any-return]
    return event["dimensions"].get(key)  # type: ignore[no-any-return]


def naive(
    events: list[dict[str, Any]],
    tenant_id: str,
    meter: str,
    start: datetime,
    end: datetime,
    size: str | None,
    zone: ZoneInfo,
    group_by: list[str],
    filters: dict[str, set[str]],
) -> list[tuple[Any, ...]]:
    """(window, group, value, count) per window and group with events, in answer order."""
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["tenant_id"] != tenant_id or event["meter"] != meter:
            continue
        if not start <= event["ts"] < end:
            continue
        if any(key_value(event, k) not in values for k, values in filters.items()):
            continue
        if size is None:
            window = (start, end)
        else:
            w_start, w_end = naive_window(event["ts"], size, zone)
            window = (max(w_start, start), min(w_end, end))
        cells[(window, tuple(key_value(event, k) for k in group_by))].append(event)
    aggregation, _, unique_key = AGG_METERS[meter]
    rows = []
    for (window, group), members in cells.items():
        if aggregation == "max":
            value = str(max(e["value"] for e in members))
        else:
            assert unique_key is not None
            seen = {key_value(e, unique_key) for e in members} - {None}
            value = str(len(seen))
        rows.append((window, tuple(v or "" for v in group), group, value, len(members)))
    rows.sort(key=lambda row: (row[0][0], row[1]))
    return [(window, group, value, count) for window, _, group, value, count in rows]


def answered(block: dict[str, Any], group_by: list[str]) -> list[tuple[Any, ...]]:
    return [
        (
            (
                datetime.fromisoformat(row["window_start"]).astimezone(UTC),
                datetime.fromisoformat(row["window_end"]).astimezone(UTC),
            ),
            tuple(row["group"][k] for k in group_by),
            str(Decimal(row["value"])) if block["aggregation"] == "max" else row["value"],
            row["count"],
        )
        for row in block["rows"]
    ]


event_spec = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["acme", "acme", "globex", "initech"]),
        "meter": st.sampled_from(list(AGG_METERS)),
        "offset": st.one_of(
            st.integers(min_value=-3 * 86400, max_value=3 * 86400),
            st.integers(min_value=-7200, max_value=7200),
            st.sampled_from([-3600, -1, 0, 1, 900, 3600]),
        ),
        "value": st.one_of(
            st.decimals(min_value=0, max_value=10**6, places=3),
            st.sampled_from([Decimal(0), Decimal(1), Decimal("7.5")]),
        ),
        "attribution": st.fixed_dictionaries(
            {k: st.one_of(st.none(), st.sampled_from(POOLS[k])) for k in ATTRIBUTION}
        ),
        "dimensions": st.fixed_dictionaries(
            {}, optional={k: st.sampled_from(POOLS[k]) for k in ("region", "tier")}
        ),
    }
)
query_spec = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["acme", "acme", "globex", "initech"]),
        "meter": st.sampled_from([None, *AGG_METERS]),
        "window_size": st.sampled_from([None, "hour", "day", "day", "month", "month"]),
        "timezone": st.sampled_from(["anchor", "anchor", None, *ZONES]),
        "start": st.integers(min_value=-40 * 96, max_value=0),
        "length": st.one_of(
            st.integers(min_value=1, max_value=8 * 96),
            st.integers(min_value=1, max_value=80 * 96),
        ),
        "group_by": st.lists(
            st.sampled_from([*ATTRIBUTION, "region", "tier"]), max_size=2, unique=True
        ),
        "filters": st.lists(
            st.sampled_from(["user_id", "model", "region"]).flatmap(
                lambda k: st.tuples(st.just(k), st.sampled_from(POOLS[k]))
            ),
            max_size=1,
        ),
    }
)


async def check_queries(
    client: Client,
    reader: dict[str, str],
    events: list[dict[str, Any]],
    instant: datetime,
    anchor_zone: str,
    queries: list[dict[str, Any]],
) -> None:
    for spec in queries:
        meter = spec["meter"]
        declared = set(AGG_METERS[meter][1]) if meter else {"region", "tier"}
        group_by = [k for k in spec["group_by"] if k in ATTRIBUTION or k in declared]
        filters: dict[str, set[str]] = defaultdict(set)
        for key, value in spec["filters"]:
            if key in ATTRIBUTION or key in declared:
                filters[key].add(value)
        start = instant + QUARTER * spec["start"]
        end = start + QUARTER * spec["length"]
        timezone = anchor_zone if spec["timezone"] == "anchor" else spec["timezone"]
        zone_name = timezone or TENANTS[spec["tenant_id"]]
        params: dict[str, Any] = {
            "tenant_id": spec["tenant_id"],
            "from_": start.isoformat(),
            "to": end.isoformat(),
            "group_by": group_by,
            "filter": [f"{k}:{v}" for k, values in filters.items() for v in sorted(values)],
        }
        if meter:
            params["meter"] = meter
        if spec["window_size"]:
            params["window_size"] = spec["window_size"]
        if timezone:
            params["timezone"] = timezone
        answer = await usage(client, reader, **params)
        blocks = [answer] if meter else answer["meters"]
        for block in blocks:
            if block["meter"] not in AGG_METERS:
                continue
            expected = naive(
                events,
                spec["tenant_id"],
                block["meter"],
                start,
                end,
                spec["window_size"],
                ZoneInfo(zone_name),
                group_by,
                filters,
            )
            assert answered(block, group_by) == expected, (params, block["meter"])


def battery() -> list[dict[str, Any]]:
    """Asked in every example: months (the cube's month cells and projections) grouped by
    model and by user, days in the anchor's zone, and a range across it."""
    common = {"tenant_id": "acme", "timezone": "anchor", "filters": []}
    return [
        {
            **common,
            "meter": m,
            "window_size": "month",
            "start": -40 * 96,
            "length": 80 * 96,
            "group_by": group_by,
        }
        for m in AGG_METERS
        for group_by in ([], ["model"], ["user_id"])
    ] + [
        {
            **common,
            "meter": None,
            "window_size": "day",
            "start": -4 * 96,
            "length": 8 * 96,
            "group_by": ["region"],
        },
        {
            **common,
            "meter": None,
            "window_size": None,
            "start": -4 * 96,
            "length": 8 * 96,
            "group_by": [],
        },
    ]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    anchor=st.sampled_from(ANCHORS),
    specs=st.lists(event_spec, max_size=60),
    chunks=st.integers(min_value=1, max_value=3),
    folds=st.lists(
        st.one_of(st.none(), st.integers(min_value=-4 * 96, max_value=4 * 96)), max_size=3
    ),
    queries=st.lists(query_spec, min_size=1, max_size=4),
)
async def test_max_and_unique_count_equal_naive_and_survive_a_rebuild(
    client: Client,
    agg_meters: dict[str, int],
    reader: dict[str, str],
    pg_pool: asyncpg.Pool,
    anchor: tuple[datetime, str],
    specs: list[dict[str, Any]],
    chunks: int,
    folds: list[int | None],
    queries: list[dict[str, Any]],
) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows, rollup_cube")
    instant, anchor_zone = anchor
    events = []
    for index, spec in enumerate(specs):
        meter = spec["meter"]
        events.append(
            {
                **spec,
                "key": f"e{index}",
                "ts": instant + timedelta(seconds=spec["offset"]),
                # unique_count events carry no value.
                "value": spec["value"] if AGG_METERS[meter][0] == "max" else None,
                "dimensions": {
                    k: v for k, v in spec["dimensions"].items() if k in AGG_METERS[meter][1]
                },
            }
        )
    size = -(-len(events) // chunks) or 1
    for chunk, first in enumerate(range(0, len(events), size)):
        async with pg_pool.acquire() as connection, connection.transaction():
            await store_events(
                connection, [event_row(agg_meters, e) for e in events[first : first + size]]
            )
        if chunk < len(folds):
            before = None if folds[chunk] is None else instant + QUARTER * folds[chunk]
            async with pg_pool.acquire() as connection:
                await fold_rollups(connection, before=before)

    all_queries = [*battery(), *queries]
    await check_queries(client, reader, events, instant, anchor_zone, all_queries)

    # A rebuild from the raw events (as event cancellation recomputes rows) keeps the maxes
    # and the keys distinct counts are read from: the same answers, before and after a fold.
    start = instant - timedelta(days=4)
    async with pg_pool.acquire() as connection:
        for tenant_id in TENANTS:
            async with connection.transaction():
                await rebuild_rollups(connection, tenant_id, start, instant + timedelta(days=4))
    await check_queries(client, reader, events, instant, anchor_zone, all_queries)
    async with pg_pool.acquire() as connection:
        await fold_rollups(connection)
    await check_queries(client, reader, events, instant, anchor_zone, all_queries)
