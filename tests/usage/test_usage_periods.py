"""`period` on /v1/usage and /v1/usage/summary: the same answer as the `from`/`to` it resolves
to, echoed with the offset of `timezone`; every misuse a 422 naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from service.common.periods import resolve_period
from tests.usage.conftest import Client, Ev, store, usage

pytestmark = pytest.mark.usefixtures("world")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
async def march(pg_pool: asyncpg.Pool, world: dict[str, int]) -> None:
    """Acme (Berlin) tokens around the spring-forward of 2026-03-29 and the month's edges."""
    times = [
        "2026-02-28T22:45:00",  # 23:45 on 28 Feb in Berlin: February
        "2026-02-28T23:00:00",  # 00:00 on 1 March in Berlin
        "2026-03-28T23:00:00",  # 00:00 on 29 March (+01:00)
        "2026-03-29T21:45:00",  # 23:45 on 29 March (+02:00)
        "2026-03-29T22:00:00",  # 00:00 on 30 March
        "2026-03-31T21:45:00",  # 23:45 on 31 March: the month's last quarter hour
        "2026-03-31T22:00:00",  # 00:00 on 1 April
    ]
    await store(
        pg_pool,
        world,
        [
            Ev("acme", "input_tokens", utc(t), Decimal(10**i), f"m{i}", {"model": "gpt-4o"})
            for i, t in enumerate(times)
        ],
    )


async def test_a_month_is_the_local_calendar_month(
    client: Client, reader: dict[str, str], march: None
) -> None:
    answer = await usage(client, reader, tenant_id="acme", meter="input_tokens", period="2026-03")
    assert (answer["from"], answer["to"]) == (
        "2026-03-01T00:00:00+01:00",
        "2026-04-01T00:00:00+02:00",
    )
    assert answer["timezone"] == "Europe/Berlin"
    assert [row["sum"] for row in answer["rows"]] == ["111110"]
    same = await usage(
        client,
        reader,
        tenant_id="acme",
        meter="input_tokens",
        from_=answer["from"],
        to=answer["to"],
    )
    assert same["rows"] == answer["rows"]


async def test_a_dst_day_and_its_windows(
    client: Client, reader: dict[str, str], march: None
) -> None:
    answer = await usage(
        client,
        reader,
        tenant_id="acme",
        meter="input_tokens",
        period="2026-03-29",
        window_size="hour",
    )
    assert (answer["from"], answer["to"]) == (
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    )
    assert [(row["window_start"], row["sum"]) for row in answer["rows"]] == [
        ("2026-03-29T00:00:00+01:00", "100"),
        ("2026-03-29T23:00:00+02:00", "1000"),
    ]


async def test_period_in_another_zone(client: Client, reader: dict[str, str], march: None) -> None:
    """`timezone` places the period: March in Kathmandu starts at 18:15 UTC on 28 February."""
    answer = await usage(
        client,
        reader,
        tenant_id="acme",
        meter="input_tokens",
        period="2026-03",
        timezone="Asia/Kathmandu",
    )
    assert (answer["from"], answer["to"]) == (
        "2026-03-01T00:00:00+05:45",
        "2026-04-01T00:00:00+05:45",
    )
    # 22:45 and 23:00 UTC on 28 Feb are in Kathmandu's March; 31 March after 18:15 UTC is not.
    assert answer["rows"][0]["sum"] == "11111"
    new_york = await usage(
        client,
        reader,
        tenant_id="acme",
        meter="input_tokens",
        period="2026-03-29",
        timezone="America/New_York",
    )
    assert (new_york["from"], new_york["to"]) == (
        "2026-03-29T00:00:00-04:00",
        "2026-03-30T00:00:00-04:00",
    )


async def test_every_meter_and_the_summary_take_period(
    client: Client, reader: dict[str, str], march: None
) -> None:
    every = await usage(client, reader, tenant_id="acme", period="2026-03", group_by="model")
    assert (every["from"], every["to"]) == (
        "2026-03-01T00:00:00+01:00",
        "2026-04-01T00:00:00+02:00",
    )
    tokens = next(block for block in every["meters"] if block["meter"] == "input_tokens")
    assert tokens["rows"][0]["sum"] == "111110"
    response = await client.get(
        "/v1/usage/summary",
        params={"tenant_id": "acme", "period": "2026-03", "timezone": "Asia/Kathmandu"},
        headers=reader,
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["from"], summary["timezone"]) == ("2026-03-01T00:00:00+05:45", "Asia/Kathmandu")
    tokens = next(block for block in summary["meters"] if block["meter"] == "input_tokens")
    assert tokens["rows"][0]["sum"] == "11111"


@pytest.mark.parametrize("text", ["today", "yesterday", "7d", "30d", "this_month", "last_month"])
async def test_named_periods_resolve_against_now(
    client: Client, reader: dict[str, str], text: str
) -> None:
    before = resolve_period(text, ZoneInfo("Europe/Berlin"), datetime.now(UTC))
    answer = await usage(client, reader, tenant_id="acme", meter="input_tokens", period=text)
    after = resolve_period(text, ZoneInfo("Europe/Berlin"), datetime.now(UTC))
    echoed = (datetime.fromisoformat(answer["from"]), datetime.fromisoformat(answer["to"]))
    # A quarter hour (or midnight) may pass between the two: the answer is one of them.
    assert echoed in (before, after)
    assert answer["from"].endswith(("+01:00", "+02:00"))


async def test_summary_without_a_range_names_from_and_to(
    client: Client, reader: dict[str, str]
) -> None:
    response = await client.get("/v1/usage/summary", params={"tenant_id": "acme"}, headers=reader)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["from", "to"]


BAD: list[tuple[str, dict[str, Any], list[str], str]] = [
    # name, parameters, fields named, words in the detail
    (
        "period with from",
        {"period": "today", "from_": "2026-11-01T00:00:00Z"},
        ["period", "from"],
        "one or the other",
    ),
    (
        "period with to",
        {"period": "7d", "to": "2026-11-01T00:00:00Z"},
        ["period", "to"],
        "one or the other",
    ),
    (
        "period with both",
        {"period": "2026-11", "from_": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
        ["period", "from", "to"],
        "one or the other",
    ),
    ("no range", {}, ["from", "to"], "required"),
    ("only from", {"from_": "2026-11-01T00:00:00Z"}, ["to"], "required"),
    ("unknown period", {"period": "week"}, ["period"], "this_month"),
    ("empty period", {"period": ""}, ["period"], "not a period"),
    ("month 13", {"period": "2026-13"}, ["period"], "calendar month"),
    ("30 February", {"period": "2026-02-30"}, ["period"], "calendar date"),
    ("period and a bad zone", {"period": "today", "timezone": "Mars/Base"}, ["timezone"], "IANA"),
    ("end of the calendar", {"period": "9999-12"}, ["period"], "limits of the calendar"),
    ("start of the calendar", {"period": "0001-01", "timezone": "UTC"}, ["period"], "limits"),
    (
        "a skipped date",
        {"period": "1994-12-31", "timezone": "Pacific/Kiritimati"},
        ["period"],
        "skipped",
    ),
    # Berlin's local mean time (+00:53:28) is not on the 15-minute grid of the rollups.
    ("local mean time", {"period": "1890-01"}, ["period"], "15-minute"),
]


@pytest.mark.parametrize(
    ("params", "fields", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
@pytest.mark.parametrize("path", ["/v1/usage", "/v1/usage/summary"])
async def test_misused_periods_are_422_naming_the_field(
    client: Client,
    reader: dict[str, str],
    path: str,
    params: dict[str, Any],
    fields: list[str],
    words: str,
) -> None:
    query = {("from" if k == "from_" else k): v for k, v in {"tenant_id": "acme", **params}.items()}
    response = await client.get(path, params=query, headers=reader)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert [e["field"] for e in problem["errors"]] == fields
    assert words.lower() in problem["detail"].lower() or any(
        words.lower() in e["message"].lower() for e in problem["errors"]
    ), problem


async def test_a_bound_key_still_sees_only_its_tenant(client: Client, keys: Any) -> None:
    bound = await keys.make("read", tenant_id="globex")
    response = await client.get(
        "/v1/usage", params={"tenant_id": "acme", "period": "today"}, headers=bound
    )
    assert response.status_code == 403
    mine = await client.get("/v1/usage", params={"period": "today"}, headers=bound)
    assert mine.status_code == 200, mine.text
    assert mine.json()["timezone"] == "America/New_York"


def test_the_range_holds_exactly_the_hours_of_the_period() -> None:
    start, end = resolve_period("2026-03", ZoneInfo("Europe/Berlin"), datetime.now(UTC))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=31 * 24 - 1)
