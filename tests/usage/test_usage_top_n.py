"""Top N: `order_by=value|-value` with `limit` keeps each meter's N rows of highest (lowest)
value and says `truncated: true` when more rows existed. Checked against the naive computation
over the raw events, ranked the same way by hand."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.usage.conftest import METERS, Client, Ev, store, usage
from tests.usage.test_usage_matches_naive import AGGREGATION, answered, naive_usage

START = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # Berlin falls back the day after
END = START + timedelta(days=3)
ZONE = "Europe/Berlin"
USERS = ["u1", "u2", "u3", "u4", "u5", "u6"]
MODELS = ["gpt-4o", "llama", "claude"]


def naive_value(row: dict[str, Any], aggregation: str) -> Decimal | None:
    if aggregation == "count":
        return Decimal(row["count"])
    value: Decimal | None = row[aggregation]
    return value


def naive_top(
    rows: list[dict[str, Any]], aggregation: str, order_by: str | None, limit: int | None
) -> tuple[list[dict[str, Any]], bool]:
    """Rank by hand: rows without a value after all others, ties in the usual order (the
    naive rows come in it), then cut."""
    ranked = list(rows)
    if order_by is not None:
        with_value = [r for r in rows if naive_value(r, aggregation) is not None]
        without = [r for r in rows if naive_value(r, aggregation) is None]
        if order_by == "value":
            with_value.sort(key=lambda r: naive_value(r, aggregation))  # stable
        else:
            # Descending, ties still in the usual order: group equal values, highest first.
            by_value: dict[Decimal, list[dict[str, Any]]] = defaultdict(list)
            for row in with_value:
                value = naive_value(row, aggregation)
                assert value is not None
                by_value[value].append(row)
            with_value = [r for v in sorted(by_value, reverse=True) for r in by_value[v]]
        ranked = with_value + without
    if limit is None:
        return ranked, False
    return ranked[:limit], len(ranked) > limit


event_specs = st.lists(
    st.fixed_dictionaries(
        {
            "meter": st.sampled_from([name for name, _, _ in METERS]),
            "minute": st.integers(min_value=0, max_value=3 * 24 * 60 - 1),
            # Few distinct values: ties in the ranking are common.
            "value": st.one_of(st.none(), st.sampled_from([Decimal(v) for v in (0, 1, 2, 5)])),
            "user_id": st.one_of(st.none(), st.sampled_from(USERS)),
            "model": st.one_of(st.none(), st.sampled_from(MODELS)),
        }
    ),
    max_size=60,
)
query_specs = st.lists(
    st.fixed_dictionaries(
        {
            "meter": st.sampled_from([None, *[name for name, _, _ in METERS]]),
            "window_size": st.sampled_from([None, None, "day", "hour"]),
            "group_by": st.sampled_from([["user_id"], ["model"], ["user_id", "model"], []]),
            "order_by": st.sampled_from([None, "value", "-value", "-value"]),
            "limit": st.one_of(st.none(), st.integers(min_value=1, max_value=8)),
        }
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=event_specs, queries=query_specs)
@pytest.mark.usefixtures("world")
async def test_top_n_equals_naive_ranking(
    client: Client,
    world: dict[str, int],
    reader: dict[str, str],
    pg_pool: asyncpg.Pool,
    specs: list[dict[str, Any]],
    queries: list[dict[str, Any]],
) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows, model_rollup_rows")
    events = []
    for index, spec in enumerate(specs):
        value = spec["value"]
        if value is None and AGGREGATION[spec["meter"]] == "sum":
            value = Decimal(index)
        events.append(
            Ev(
                tenant_id="acme",
                meter=spec["meter"],
                ts=START + timedelta(minutes=spec["minute"]),
                value=value,
                key=f"e{index}",
                attribution={"user_id": spec["user_id"], "model": spec["model"]},
            )
        )
    stored = await store(pg_pool, world, events)
    for spec in queries:
        params: dict[str, Any] = {
            "tenant_id": "acme",
            "from_": START.isoformat(),
            "to": END.isoformat(),
            "timezone": ZONE,
            "group_by": spec["group_by"],
        }
        for name in ("meter", "window_size", "order_by", "limit"):
            if spec[name] is not None:
                params[name] = spec[name]
        answer = await usage(client, reader, **params)
        blocks = [answer] if spec["meter"] else answer["meters"]
        assert answer["order_by"] == spec["order_by"] and answer["limit"] == spec["limit"]
        truncations = []
        for block in blocks:
            aggregation = block["aggregation"]
            expected_rows, expected_truncated = naive_top(
                naive_usage(
                    stored,
                    "acme",
                    block["meter"],
                    START,
                    END,
                    spec["window_size"],
                    ZoneInfo(ZONE),
                    spec["group_by"],
                    {},
                ),
                aggregation,
                spec["order_by"],
                spec["limit"],
            )
            assert answered(block) == expected_rows, (params, block["meter"])
            truncations.append(expected_truncated)
            if not spec["meter"]:
                assert block["truncated"] is expected_truncated
        assert answer["truncated"] is any(truncations)


async def test_top_n_example(
    client: Client, world: dict[str, int], reader: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """The README's example: the three users with the most tokens in a month."""
    tokens = {"u1": 5, "u2": 50, "u3": 20, "u4": 20, "u5": 1}
    events = [
        Ev("acme", "input_tokens", START + timedelta(hours=i), Decimal(v), f"k{i}", {"user_id": u})
        for i, (u, v) in enumerate(tokens.items())
    ]
    await store(pg_pool, world, events)
    params = {"tenant_id": "acme", "from_": START.isoformat(), "to": END.isoformat()}
    answer = await usage(
        client,
        reader,
        **params,
        meter="input_tokens",
        group_by="user_id",
        order_by="-value",
        limit=3,
    )
    assert [(r["group"]["user_id"], r["value"]) for r in answer["rows"]] == [
        ("u2", "50"),
        ("u3", "20"),  # a tie with u4: the usual order (group values) decides
        ("u4", "20"),
    ]
    assert answer["truncated"] is True
    assert answer["order_by"] == "-value" and answer["limit"] == 3
    everything = await usage(
        client, reader, **params, meter="input_tokens", group_by="user_id", limit=5
    )
    assert everything["truncated"] is False and len(everything["rows"]) == 5
    # Without order_by, limit keeps the first rows in the usual order.
    first = await usage(client, reader, **params, meter="input_tokens", group_by="user_id", limit=2)
    assert [r["group"]["user_id"] for r in first["rows"]] == ["u1", "u2"]
    assert first["truncated"] is True
    plain = await usage(client, reader, **params, meter="input_tokens")
    assert plain["truncated"] is False and plain["order_by"] is None and plain["limit"] is None


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"order_by": "sum"}, "order_by", "order_by"),
        ({"order_by": "-value", "limit": "0"}, "limit", "limit"),
        ({"order_by": "-value", "limit": "10001"}, "limit", "limit"),
        ({"limit": "many"}, "limit", "limit"),
    ],
)
@pytest.mark.usefixtures("world")
async def test_bad_order_by_or_limit_is_422_naming_it(
    client: Client, reader: dict[str, str], params: dict[str, str], field: str, words: str
) -> None:
    problem = await usage(
        client,
        reader,
        422,
        tenant_id="acme",
        from_=START.isoformat(),
        to=END.isoformat(),
        **params,
    )
    assert problem["code"] == "validation_error"
    assert field in [e["field"] for e in problem.get("errors") or []], problem
    assert words in problem["detail"], problem
