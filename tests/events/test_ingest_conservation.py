"""Conservation: whatever mix of new, duplicate, conflicting and invalid events arrives, the
rollups hold exactly the sum and count of the accepted values, and a rebuild from raw events
gives the same rollups as incremental ingestion."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.paths import PROJECT_ROOT
from tests.events.conftest import Client

pytestmark = pytest.mark.usefixtures("seeded")

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
values = st.one_of(
    st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["-1", "NaN", "abc"]),  # invalid ones
)
event_strategy = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["acme", "globex", "frozen", "ghost"]),
        "event_name": st.sampled_from(["input_tokens", "api_calls", "seats", "nope"]),
        "idempotency_key": st.sampled_from([f"k{i}" for i in range(12)]),
        "minutes_ago": st.integers(min_value=0, max_value=60 * 24 * 3),
        "value": values,
        "model": st.sampled_from([None, "gpt-4o", "llama"]),
        "user_id": st.sampled_from([None, "u1", "u2"]),
        "region": st.sampled_from([None, "eu", "us"]),
    }
)


def _to_body(spec: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenant_id": spec["tenant_id"],
        "event_name": spec["event_name"],
        "idempotency_key": spec["idempotency_key"],
        "timestamp": (NOW - timedelta(minutes=spec["minutes_ago"])).isoformat(),
        "value": str(spec["value"]),
    }
    if spec["model"]:
        body["model"] = spec["model"]
    if spec["user_id"]:
        body["user_id"] = spec["user_id"]
    if spec["region"] and spec["event_name"] == "input_tokens":
        body["dimensions"] = {"region": spec["region"]}
    return body


async def _truncate(pg_pool: asyncpg.Pool) -> None:
    await pg_pool.execute("TRUNCATE events, rollup_rows")


ROLLUP_COLUMNS = (
    "tenant_id, meter_id, bucket_start, org_id, project_id, api_key_id, user_id, model, "
    "dimensions, sum, count, last_value, last_ts, last_event_id"
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(st.lists(event_strategy, min_size=1, max_size=15), min_size=1, max_size=4))
async def test_rollups_conserve_accepted_values(
    client: Client, ingest_key: dict[str, str], pg_pool: asyncpg.Pool, batches: list[Any]
) -> None:
    await _truncate(pg_pool)
    accepted_sum = Decimal(0)
    accepted_count = 0
    for batch in batches:
        bodies = [_to_body(spec) for spec in batch]
        if len(bodies) == 1:
            response = await client.post("/v1/events", json=bodies[0], headers=ingest_key)
            assert response.status_code in (202, 409, 422), response.text
            if response.status_code == 202 and response.json()["status"] == "accepted":
                accepted_sum += Decimal(bodies[0]["value"])
                accepted_count += 1
            continue
        response = await client.post(
            "/v1/events/batch", json={"events": bodies}, headers=ingest_key
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["accepted"] + answer["duplicates"] + answer["rejected"] == len(bodies)
        for result in answer["results"]:
            if result["status"] == "accepted":
                accepted_sum += Decimal(bodies[result["index"]]["value"])
                accepted_count += 1
    stored = await pg_pool.fetchrow("SELECT coalesce(sum(value), 0) s, count(*) c FROM events")
    rolled = await pg_pool.fetchrow(
        "SELECT coalesce(sum(sum), 0) s, coalesce(sum(count), 0) c FROM rollups"
    )
    assert stored is not None and rolled is not None
    assert (stored["s"], stored["c"]) == (accepted_sum, accepted_count)
    assert (rolled["s"], rolled["c"]) == (accepted_sum, accepted_count)
    # Keys are unique per tenant: no event was stored twice.
    assert (
        await pg_pool.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM events GROUP BY tenant_id, idempotency_key "
            "HAVING count(*) > 1) d"
        )
        == 0
    )


async def test_rebuild_equals_incremental(
    client: Client, ingest_key: dict[str, str], pg_pool: asyncpg.Pool, database_url: str
) -> None:
    bodies = []
    for i in range(300):
        bodies.append(
            {
                "tenant_id": "acme" if i % 3 else "globex",
                "event_name": ["input_tokens", "api_calls", "seats"][i % 3],
                "idempotency_key": f"r{i}",
                "timestamp": (NOW - timedelta(minutes=7 * i)).isoformat(),
                "value": str(i % 17),
                "model": ["gpt-4o", "llama", None][i % 3 - 1 if i % 2 else 0],
                "user_id": f"u{i % 5}",
            }
        )
    for start in range(0, len(bodies), 50):
        chunk = bodies[start : start + 50]
        response = await client.post("/v1/events/batch", json={"events": chunk}, headers=ingest_key)
        assert response.json()["accepted"] == len(chunk)
    query = f"SELECT {ROLLUP_COLUMNS} FROM rollups ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
    incremental = [dict(r) for r in await pg_pool.fetch(query)]
    # Damage acme's rollups, then rebuild them over a range covering all its events.
    await pg_pool.execute(
        "UPDATE rollup_rows SET sums = array_fill(1000::numeric, ARRAY[cardinality(meter_ids)]) "
        "WHERE tenant_id = 'acme'"
    )
    start = (NOW - timedelta(days=3)).replace(minute=0)
    end = (NOW + timedelta(hours=1)).replace(minute=0)
    result = await asyncio.to_thread(
        run_rebuild,
        database_url,
        "--tenant",
        "acme",
        "--from",
        start.isoformat(),
        "--to",
        end.isoformat(),
    )
    assert result.returncode == 0, result.stderr
    assert "Rebuilt rollups of acme" in result.stdout
    rebuilt = [dict(r) for r in await pg_pool.fetch(query)]
    assert rebuilt == incremental


def run_rebuild(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "rollups", "rebuild", *args],
        cwd=PROJECT_ROOT,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rebuild_refuses_unaligned_or_retained_ranges(database_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_rebuild(database_url, *args)

    unaligned = run(
        "--tenant", "acme", "--from", "2026-11-01T00:07:00Z", "--to", "2026-11-02T00:00:00Z"
    )
    assert unaligned.returncode != 0 and "15-minute" in unaligned.stderr
    ancient = run(
        "--tenant", "acme", "--from", "2020-01-01T00:00:00Z", "--to", "2020-02-01T00:00:00Z"
    )
    assert ancient.returncode != 0 and "retention" in ancient.stderr
    unknown = run(
        "--tenant", "ghost", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z"
    )
    assert unknown.returncode != 0 and "ghost" in unknown.stderr
