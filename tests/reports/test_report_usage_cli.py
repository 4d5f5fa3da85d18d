"""`python -m service report usage`, run as a person or a script would: a subprocess with
DATABASE_URL. The CSV is parsed back and compared with what GET /v1/usage answers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.test_cli import run_cli
from tests.usage.conftest import Ev, store

Client = AsyncTestClient[Litestar]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
async def march(client: Client, keys: Keys, pg_pool: asyncpg.Pool) -> dict[str, str]:
    """Acme (Berlin) in March 2026: tokens of two models and users, API calls, seat counts;
    returns a read key's headers."""
    response = await client.post(
        "/v1/tenants",
        json={"id": "acme", "name": "Acme", "timezone": "Europe/Berlin"},
        headers=keys.admin,
    )
    assert response.status_code == 201, response.text
    meters: dict[str, int] = {}
    for event_name, aggregation, unit in (
        ("input_tokens", "sum", "tokens"),
        ("api_calls", "count", None),
        ("seats", "last", "seats"),
    ):
        meters[event_name] = await pg_pool.fetchval(
            "INSERT INTO meters (event_name, name, aggregation, dimensions, currency, unit) "
            "VALUES ($1, $1, $2, '{}', 'USD', $3) RETURNING id",
            event_name,
            aggregation,
            unit,
        )
    events = [
        Ev("acme", "input_tokens", utc("2026-03-02T09:00:00"), Decimal("1200000"), "a",
           {"model": "gpt-4o", "user_id": "u1"}),
        Ev("acme", "input_tokens", utc("2026-03-02T10:00:00"), Decimal("0.5"), "b",
           {"model": "gpt-4o", "user_id": "u2"}),
        Ev("acme", "input_tokens", utc("2026-03-29T12:00:00"), Decimal("45000"), "c",
           {"model": "llama", "user_id": "u1"}),
        # 00:30 on 1 April in Berlin: not March there.
        Ev("acme", "input_tokens", utc("2026-03-31T22:30:00"), Decimal("7"), "d",
           {"model": "llama"}),
        Ev("acme", "api_calls", utc("2026-03-02T09:00:00"), None, "e", {"model": "gpt-4o"}),
        Ev("acme", "api_calls", utc("2026-03-03T09:00:00"), None, "f", {"model": "gpt-4o"}),
        Ev("acme", "seats", utc("2026-03-05T09:00:00"), Decimal("25"), "g"),
    ]  # fmt: skip
    await store(pg_pool, meters, events)
    return await keys.make("read", name="reports")


async def api_usage(client: Client, key: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/usage", params=params, headers=key)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def report(database_url: str, *args: str) -> str:
    result = run_cli("report", "usage", "--tenant", "acme", *args, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


async def test_csv_holds_every_row_exactly(
    client: Client, march: dict[str, str], database_url: str
) -> None:
    out = report(database_url, "--period", "2026-03", "--group-by", "model", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    api = await api_usage(client, march, tenant_id="acme", period="2026-03", group_by="model")
    expected = [
        {
            "meter": block["meter"],
            "model": row["group"]["model"] or "",
            "value": row["value"] or "",
            "count": str(row["count"]),
            "sum": row["sum"],
            "window_start": row["window_start"],
        }
        for block in api["meters"]
        for row in block["rows"]
    ]
    assert [{k: row[k] for k in expected[0]} for row in rows] == expected
    tokens = {row["model"]: row["value"] for row in rows if row["meter"] == "input_tokens"}
    assert tokens == {"gpt-4o": "1200000.5", "llama": "45000"}
    assert rows[0]["window_start"] == "2026-03-01T00:00:00+01:00"
    assert rows[0]["window_end"] == "2026-04-01T00:00:00+02:00"
    assert list(rows[0]) == [
        "meter", "aggregation", "unit", "window_start", "window_end", "model",
        "value", "sum", "count", "last", "avg",
    ]  # fmt: skip


async def test_csv_by_day_and_two_keys(
    client: Client, march: dict[str, str], database_url: str
) -> None:
    args = ["--period", "2026-03", "--meter", "input_tokens", "--window", "day"]
    out = report(
        database_url, *args, "--group-by", "model", "--group-by", "user_id", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    api = await api_usage(
        client, march, tenant_id="acme", period="2026-03", meter="input_tokens",
        window_size="day", group_by=["model", "user_id"],
    )  # fmt: skip
    assert [(r["window_start"], r["model"], r["user_id"], r["value"]) for r in rows] == [
        (row["window_start"], row["group"]["model"], row["group"]["user_id"], row["value"])
        for row in api["rows"]
    ]
    assert [r["window_start"][:10] for r in rows] == ["2026-03-02", "2026-03-02", "2026-03-29"]


async def test_json_is_the_api_answer(
    client: Client, march: dict[str, str], database_url: str
) -> None:
    out = report(database_url, "--period", "2026-03", "--group-by", "user_id", "--format", "json")
    api = await api_usage(client, march, tenant_id="acme", period="2026-03", group_by="user_id")
    assert json.loads(out) == api


async def test_table_for_people(march: dict[str, str], database_url: str) -> None:
    out = report(database_url, "--period", "2026-03", "--group-by", "model")
    assert "Usage of acme from 2026-03-01T00:00:00+01:00 to 2026-04-01T00:00:00+02:00" in out
    lines = out.splitlines()
    gpt = next(line for line in lines if "gpt-4o" in line and "1.2M" in line)
    llama = next(line for line in lines if "llama" in line and "45.0k" in line)
    # Numbers are right-aligned: the value column ends at the same place on every line.
    assert gpt.index("1.2M") + len("1.2M") == llama.index("45.0k") + len("45.0k")
    total = next(line for line in lines if "Total" in line and "1.2M" in line)
    assert total.index("1.2M") + 4 == gpt.index("1.2M") + 4
    # Counts: API calls add up; the seats' `last` value does not, its events do.
    assert any("Total" in line and line.rstrip(" │|").endswith("2") for line in lines)
    assert "seats" in out and "25" in out


async def test_no_usage_is_said(march: dict[str, str], database_url: str) -> None:
    out = report(database_url, "--period", "2026-01", "--meter", "input_tokens")
    assert "no usage in this range" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--period", "fortnight"], "period"),
        (["--period", "2026-03", "--group-by", "colour"], "colour"),
        (["--period", "2026-03", "--timezone", "Mars/Base"], "timezone"),
        (["--period", "2026-03", "--meter", "nope"], "nope"),
    ],
)
async def test_mistakes_are_one_line_not_a_traceback(
    march: dict[str, str], database_url: str, args: list[str], words: str
) -> None:
    result = run_cli("report", "usage", "--tenant", "acme", *args, database_url=database_url)
    assert result.returncode == 1
    assert words in result.stderr and "Error" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_tenant(database_url: str) -> None:
    result = run_cli(
        "report", "usage", "--tenant", "ghost", "--period", "today", database_url=database_url
    )
    assert result.returncode == 1
    assert "ghost" in result.stderr and "Traceback" not in result.stderr
