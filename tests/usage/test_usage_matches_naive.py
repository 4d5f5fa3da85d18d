"""The acceptance property of usage queries: for random events (tenants, attribution, dimensions,
timestamps around DST changes and month ends in awkward zones) and random queries (meter or
all, window size, zone, range, group_by, filters), GET /v1/usage answers exactly what a naive
computation over the same events gives.

Events are stored through the real ingest SQL (store_events), which lets them sit on historic
DST days the API's late-arrival window would refuse. The naive side computes windows its own
way (calendar arithmetic for days and months, a walk along the 15-minute grid for hours), not
with service.usage.windows."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.rollups.fold import fold_rollups
from tests.usage.conftest import METERS, TENANTS, Client, Ev, store, usage

# Instants at which the calendar of a zone does something awkward, with that zone.
ANCHORS = [
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "Europe/Berlin"),  # springs forward: 23-hour day
    (datetime(2026, 10, 25, 1, 0, tzinfo=UTC), "Europe/Berlin"),  # falls back: 25-hour day
    (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), "America/New_York"),  # springs forward
    (datetime(2026, 11, 1, 6, 0, tzinfo=UTC), "America/New_York"),  # falls back
    (datetime(2026, 4, 4, 15, 0, tzinfo=UTC), "Australia/Lord_Howe"),  # back 30 minutes
    (datetime(2026, 10, 3, 15, 30, tzinfo=UTC), "Australia/Lord_Howe"),  # forward 30 minutes
    (datetime(2026, 5, 31, 18, 15, tzinfo=UTC), "Asia/Kathmandu"),  # June begins (+05:45)
    (datetime(2026, 6, 30, 18, 30, tzinfo=UTC), "Asia/Kolkata"),  # July begins (+05:30)
]
ZONES = sorted({zone for _, zone in ANCHORS} | {"UTC"})
ATTRIBUTION = ("org_id", "project_id", "api_key_id", "user_id", "model")
POOLS: dict[str, list[str]] = {
    "org_id": ["o1", "o2"],
    "project_id": ["p1", "p2"],
    "api_key_id": ["k1", "k2", "k3"],
    "user_id": ["u1", "u2", "u3"],
    "model": ["gpt-4o", "llama", "claude"],
    "region": ["eu", "us"],
    "tier": ["free", "pro"],
}
DIMENSIONS = {name: dims for name, _, dims in METERS}
AGGREGATION = {name: aggregation for name, aggregation, _ in METERS}
QUARTER = timedelta(minutes=15)

event_spec = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["acme", "acme", "acme", "globex", "initech"]),
        "meter": st.sampled_from([name for name, _, _ in METERS]),
        # Seconds from the anchor; a small pool of offsets makes equal timestamps (ties
        # for `last`) common.
        "offset": st.one_of(
            st.integers(min_value=-3 * 86400, max_value=3 * 86400),
            st.integers(min_value=-7200, max_value=7200),
            st.sampled_from([-3600, -60, -1, 0, 1, 900, 1800, 3600]),
        ),
        "micros": st.sampled_from([0, 0, 1, 999_999]),
        # Copy the tenant, meter and timestamp of an earlier event: a tie for `last`,
        # usually in another rollup row (other attribution), broken by the event id.
        "twin": st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=40)),
        "value": st.one_of(
            st.none(),
            st.decimals(min_value=0, max_value=10**6, places=3),
            st.sampled_from([Decimal(0), Decimal("1"), Decimal("0.001")]),
        ),
        "attribution": st.fixed_dictionaries(
            {k: st.one_of(st.none(), st.sampled_from(POOLS[k])) for k in ATTRIBUTION}
        ),
        "dimensions": st.fixed_dictionaries(
            {},
            optional={k: st.sampled_from(POOLS[k]) for k in ("region", "tier")},
        ),
    }
)
# Sizes drawn uniformly (Hypothesis favours short lists otherwise): ties and busy windows.
event_specs = st.integers(min_value=0, max_value=80).flatmap(
    lambda n: st.lists(event_spec, min_size=n, max_size=n)
)

query_specs = st.lists(
    st.fixed_dictionaries(
        {
            "tenant_id": st.sampled_from(["acme", "acme", "globex", "initech"]),
            "meter": st.sampled_from([None, *[name for name, _, _ in METERS]]),
            "window_size": st.sampled_from([None, "hour", "hour", "day", "day", "month"]),
            # "anchor": the zone of the anchor, whose awkward instant the events surround.
            "timezone": st.sampled_from(["anchor", "anchor", None, *ZONES]),
            # In quarter hours from the anchor.
            "start": st.one_of(
                st.integers(min_value=-4 * 96, max_value=96),
                st.integers(min_value=-12, max_value=0),
            ),
            "length": st.one_of(
                st.integers(min_value=1, max_value=8 * 96),
                st.integers(min_value=1, max_value=70 * 96),
                st.integers(min_value=1, max_value=16),
            ),
            "group_by": st.lists(
                st.sampled_from([*ATTRIBUTION, "region", "tier"]), max_size=3, unique=True
            ),
            "filters": st.one_of(
                st.just([]),
                st.lists(
                    st.sampled_from([*ATTRIBUTION, "region", "tier"]).flatmap(
                        lambda k: st.tuples(st.just(k), st.sampled_from(POOLS[k]))
                    ),
                    max_size=2,
                ),
            ),
        }
    ),
    min_size=1,
    max_size=4,
)


def battery() -> list[dict[str, Any]]:
    """Queries asked in every example, on top of the random ones: each window size in the
    anchor's zone, across the anchor, with and without groups."""
    common = {"tenant_id": "acme", "timezone": "anchor", "filters": []}
    return [
        {
            **common,
            "meter": None,
            "window_size": "hour",
            "start": -96,
            "length": 192,
            "group_by": [],
        },
        {
            **common,
            "meter": None,
            "window_size": "day",
            "start": -4 * 96,
            "length": 8 * 96,
            "group_by": ["model"],
        },
        {
            **common,
            "meter": "input_tokens",
            "window_size": "month",
            "start": -40 * 96,
            "length": 80 * 96,
            "group_by": ["region", "user_id"],
        },
        {
            **common,
            "meter": "seats",
            "window_size": None,
            "start": -4 * 96,
            "length": 8 * 96,
            "group_by": ["api_key_id"],
        },
    ]


def _unit(size: str, local: datetime) -> tuple[int, ...]:
    if size == "hour":
        return (local.year, local.month, local.day, local.hour)
    if size == "day":
        return (local.year, local.month, local.day)
    return (local.year, local.month)


def naive_window(ts: datetime, size: str | None, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar window of `ts` (unclipped). No zone here changes offset at midnight, so
    days and months start at local midnight; an hour is a run of quarter hours on the same
    local hour."""
    if size is None:
        raise AssertionError("no window without a size")
    local = ts.astimezone(zone)
    if size == "day":
        first = datetime(local.year, local.month, local.day, tzinfo=zone)
        following = first.replace(tzinfo=None) + timedelta(days=1)
        return first.astimezone(UTC), following.replace(tzinfo=zone).astimezone(UTC)
    if size == "month":
        first = datetime(local.year, local.month, 1, tzinfo=zone)
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        return first.astimezone(UTC), datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
    bucket = datetime.fromtimestamp(ts.timestamp() // 900 * 900, UTC)
    unit = _unit(size, bucket.astimezone(zone))
    start = bucket
    while _unit(size, (start - QUARTER).astimezone(zone)) == unit:
        start -= QUARTER
    end = bucket + QUARTER
    while _unit(size, end.astimezone(zone)) == unit:
        end += QUARTER
    return start, end


def naive_usage(
    events: list[Ev],
    tenant_id: str,
    meter: str,
    start: datetime,
    end: datetime,
    size: str | None,
    zone: ZoneInfo,
    group_by: list[str],
    filters: dict[str, set[str]],
) -> list[dict[str, Any]]:
    def key_value(event: Ev, key: str) -> str | None:
        if key in ATTRIBUTION:
            return event.attribution.get(key)
        return event.dimensions.get(key)

    cells: dict[tuple[Any, ...], list[Ev]] = defaultdict(list)
    for event in events:
        if event.tenant_id != tenant_id or event.meter != meter:
            continue
        if not start <= event.ts < end:
            continue
        if any(key_value(event, k) not in values for k, values in filters.items()):
            continue
        if size is None:
            window = (start, end)
        else:
            w_start, w_end = naive_window(event.ts, size, zone)
            window = (max(w_start, start), min(w_end, end))
        group = tuple(key_value(event, k) for k in group_by)
        cells[(window, group)].append(event)
    rows = []
    for (window, group), members in cells.items():
        total = sum((e.value or Decimal(0) for e in members), Decimal(0))
        latest = max(members, key=lambda e: (e.ts, e.id))
        rows.append(
            {
                "window": window,
                "group": dict(zip(group_by, group, strict=True)),
                "sum": total,
                "count": len(members),
                "last": latest.value,
                "avg": (total / len(members)).quantize(Decimal("1e-12"), ROUND_HALF_UP),
                "order": (window[0], tuple(v or "" for v in group)),
            }
        )
    rows.sort(key=lambda r: r["order"])
    return rows


def answered(block: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for row in block["rows"]:
        window = (
            datetime.fromisoformat(row["window_start"]).astimezone(UTC),
            datetime.fromisoformat(row["window_end"]).astimezone(UTC),
        )
        last = None if row["last"] is None else Decimal(row["last"])
        expected_value = {
            "sum": row["sum"],
            "count": str(row["count"]),
            "last": row["last"],
        }[block["aggregation"]]
        assert row["value"] == expected_value, row
        rows.append(
            {
                "window": window,
                "group": row["group"],
                "sum": Decimal(row["sum"]),
                "count": row["count"],
                "last": last,
                "avg": Decimal(row["avg"]),
                "order": (window[0], tuple(v or "" for v in row["group"].values())),
            }
        )
    return rows


FOLDED_MODEL_ROLLUPS = """
SELECT tenant_id, meter_id, bucket_start, model, dimensions, sum(sum) AS sum,
       sum(count)::bigint AS count,
       (array_agg(last_value ORDER BY last_ts DESC, last_event_id DESC))[1] AS last_value,
       max(last_ts) AS last_ts,
       (array_agg(last_event_id ORDER BY last_ts DESC, last_event_id DESC))[1] AS last_event_id
FROM rollups GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, dimensions::text
"""
MODEL_ROLLUPS = """
SELECT tenant_id, meter_id, bucket_start, model, dimensions, sum, count, last_value, last_ts,
       last_event_id
FROM model_rollups ORDER BY 1, 2, 3, 4, dimensions::text
"""


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    anchor=st.sampled_from(ANCHORS),
    specs=event_specs,
    chunks=st.integers(min_value=1, max_value=3),
    # After chunk i, fold the 15-minute rollups into the cube: all of them (None) or those
    # before anchor + n quarter hours; later chunks then land in folded buckets.
    folds=st.lists(
        st.one_of(st.none(), st.integers(min_value=-4 * 96, max_value=4 * 96)), max_size=3
    ),
    queries=query_specs,
)
@pytest.mark.usefixtures("world")
async def test_usage_equals_naive_computation(
    client: Client,
    world: dict[str, int],
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
        tenant_id, meter = spec["tenant_id"], spec["meter"]
        ts = instant + timedelta(seconds=spec["offset"], microseconds=spec["micros"])
        if spec["twin"] is not None and spec["twin"] < index:
            twin = events[spec["twin"]]
            tenant_id, meter, ts = twin.tenant_id, twin.meter, twin.ts
        dimensions = {k: v for k, v in spec["dimensions"].items() if k in DIMENSIONS[meter]}
        value = spec["value"]
        if value is None and AGGREGATION[meter] != "count":
            value = Decimal(index)
        events.append(
            Ev(
                tenant_id=tenant_id,
                meter=meter,
                ts=ts,
                value=value,
                key=f"e{index}",
                attribution=spec["attribution"],
                dimensions=dimensions,
            )
        )
    stored: list[Ev] = []
    size = -(-len(events) // chunks) or 1
    for chunk, first in enumerate(range(0, len(events), size)):
        # Several statements: upserts merge buckets.
        stored += await store(pg_pool, world, events[first : first + size])
        if chunk < len(folds):
            before = None if folds[chunk] is None else instant + QUARTER * folds[chunk]
            async with pg_pool.acquire() as connection:
                await fold_rollups(connection, before=before)

    # The coarse table is always the full-key rollups folded by model and dimensions.
    assert [tuple(r) for r in await pg_pool.fetch(MODEL_ROLLUPS)] == [
        tuple(r) for r in await pg_pool.fetch(FOLDED_MODEL_ROLLUPS)
    ]

    for spec in [*battery(), *queries]:
        meter = spec["meter"]
        declared = set(DIMENSIONS[meter]) if meter else {"region", "tier"}
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
            "to": end.astimezone(ZoneInfo(zone_name)).isoformat(),
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
        if not meter:
            assert [b["meter"] for b in blocks] == sorted(DIMENSIONS)
        assert answer["timezone"] == zone_name
        for block in blocks:
            expected = naive_usage(
                stored,
                spec["tenant_id"],
                block["meter"],
                start,
                end,
                spec["window_size"],
                ZoneInfo(zone_name),
                group_by,
                filters,
            )
            assert answered(block) == expected, (params, block["meter"])
