"""`python -m service report costs` and `report llm`, run as a person or a script would: a
subprocess with DATABASE_URL. The CSV is parsed back and compared with what GET /v1/costs and
GET /v1/reports/llm answer; the table shows money with its currency and a total row."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.test_cli import run_cli

Client = AsyncTestClient[Litestar]
DAY = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%d")


async def post(client: Client, path: str, body: Any, headers: dict[str, str]) -> Any:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code < 300, response.text
    return response.json()


@pytest.fixture
async def calls(client: Client, keys: Keys) -> dict[str, str]:
    """Acme (UTC), the LLM preset in USD, gpt-4o and claude input/output prices, and five
    calls of two models and users half an hour ago; returns a read key's headers."""
    await post(client, "/v1/tenants", {"id": "acme", "name": "Acme", "timezone": "UTC"}, keys.admin)
    await post(client, "/v1/meters/presets/llm", {"currency": "USD"}, keys.admin)
    for model, input_price, output_price in (("gpt-4o", "2.50", "10"), ("claude", "3", "15")):
        for meter, amount in (("input_tokens", input_price), ("output_tokens", output_price)):
            body = {
                "meter": meter,
                "unit_amount": amount,
                "per_units": "1000000",
                "match": {"model": model},
                "effective_from": "2026-01-01T00:00:00Z",
            }
            await post(client, "/v1/prices", body, keys.admin)
    ts = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    events = [
        {
            "tenant_id": "acme",
            "idempotency_key": f"call-{n}",
            "timestamp": ts,
            "values": {
                "llm_requests": None,
                "input_tokens": 1000 * (n + 1),
                "output_tokens": 100 * (n + 1),
                "cache_read_tokens": 500 * n,
                "latency_ms": 200 + n,
            },
            "model": model,
            "user_id": f"u{n % 2}",
            "dimensions": {"status": "error" if n == 4 else "success"},
        }
        for n, model in enumerate(("gpt-4o", "gpt-4o", "claude", "gpt-4o", "claude"))
    ]
    ingest = await keys.make("ingest", name="gateway")
    answer = await post(client, "/v1/events/batch", {"events": events}, ingest)
    assert answer["accepted"] == 5
    return await keys.make("read", name="reports")


def report(database_url: str, kind: str, *args: str) -> str:
    result = run_cli(
        "report", kind, "--tenant", "acme", "--period", DAY, *args, database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


async def test_costs_csv_is_the_api_answer_and_json_is_it_verbatim(
    client: Client, calls: dict[str, str], database_url: str
) -> None:
    params = {"tenant_id": "acme", "period": DAY, "group_by": ["model", "user_id"]}
    response = await client.get("/v1/costs", params=params, headers=calls)
    assert response.status_code == 200, response.text
    api = response.json()
    assert len(api["rows"]) == 3

    out = report(database_url, "costs", "--group-by", "model", "--group-by", "user_id",
                 "--format", "csv")  # fmt: skip
    parsed_rows = list(csv.DictReader(io.StringIO(out)))
    rows = [r for r in parsed_rows if not r["unpriced_meter"]]
    # Cache reads have no price: listed apart, as the API's `unpriced`.
    assert [
        (r["unpriced_meter"], r["unpriced_quantity"]) for r in parsed_rows if r not in rows
    ] == [(u["meter"], u["quantity"]) for u in api["unpriced"]]
    assert api["unpriced"] and api["unpriced"][0]["meter"] == "cache_read_tokens"
    assert [(r["model"], r["user_id"], r["cost"]) for r in rows] == [
        (row["group"]["model"], row["group"]["user_id"], row["cost"]) for row in api["rows"]
    ]
    for parsed, row in zip(rows, api["rows"], strict=True):
        for meter in row["meters"]:
            assert parsed[f"{meter['meter']}.quantity"] == meter["quantity"]
            assert parsed[f"{meter['meter']}.cost"] == meter["cost"]

    as_json = json.loads(report(database_url, "costs", "--group-by", "model", "--group-by",
                                "user_id", "--format", "json"))  # fmt: skip
    assert as_json == api

    table = report(database_url, "costs", "--group-by", "model", "--order-by", "-cost")
    assert "USD" in table and "total" in table.lower()
    # Highest first: claude's calls (3 and 5 thousand input tokens at 3.00) lead.
    assert table.index("claude") < table.index("gpt-4o")


async def test_llm_report_csv_is_the_api_answer(
    client: Client, calls: dict[str, str], database_url: str
) -> None:
    params = {"tenant_id": "acme", "period": DAY, "group_by": ["model"]}
    response = await client.get("/v1/reports/llm", params=params, headers=calls)
    assert response.status_code == 200, response.text
    api = response.json()
    out = report(database_url, "llm", "--group-by", "model", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    fields = ("requests", "errors", "input_tokens", "cache_hit_rate", "avg_latency_ms", "cost")
    assert [{"model": r["model"], **{f: r[f] for f in fields}} for r in rows] == [
        {
            "model": row["group"]["model"],
            **{f: "" if row[f] is None else str(row[f]) for f in fields},
        }
        for row in api["rows"]
    ]
    assert {r["model"]: r["errors"] for r in rows} == {"claude": "1", "gpt-4o": "0"}
    table = report(database_url, "llm", "--group-by", "model")
    assert "cache hits" in table and "USD" in table


def test_a_bad_period_is_refused_naming_it(database_url: str) -> None:
    result = run_cli(
        "report", "costs", "--tenant", "acme", "--period", "someday", database_url=database_url
    )
    assert result.returncode != 0
    assert "period" in result.stderr
    assert "Traceback" not in result.stderr
