"""LLM pricing on invoices, worked by hand: meters that are not billable never appear, and
relative cache-write prices follow whichever input price applies (a tenant override too).

October 2026 in UTC. Prices per 1,000,000 tokens: gpt-4o input 2.50 list, 2.00 for acme (an
override); cache writes (5 minutes) 1.25 times input, shown per the input price's 1,000,000;
cache writes (1 hour) 2 times input, shown per 1,000 tokens. claude has no input price, so its
cache writes have nothing to refer to and are unpriced.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.invoices.conftest import (
    Record,
    Usage,
    brief,
    create_meter,
    create_price,
    create_tenant,
    finalized,
    preview,
)

Client = AsyncTestClient[Litestar]
GPT = {"model": "gpt-4o"}


async def build(client: Client, keys: Keys, record: Record) -> None:
    for tenant in ("acme", "globex"):
        await create_tenant(client, keys, tenant, timezone="UTC")
    await create_meter(client, keys, "input_tokens", "Input tokens", "sum", unit="tokens")
    for name, title in (
        ("cache_write_5m_tokens", "Cache writes (5m)"),
        ("cache_write_1h_tokens", "Cache writes (1h)"),
    ):
        await create_meter(client, keys, name, title, "sum", unit="tokens")
    # Not billable: latency has no currency at all; requests even have a price.
    await create_meter(
        client, keys, "latency_ms", "Latency", "sum", unit="ms", billable=False, currency=None
    )
    await create_meter(client, keys, "llm_requests", "Requests", "count", billable=False)
    await create_price(client, keys, "llm_requests", unit_amount="0.01")
    # Relative prices first: they may exist before what they refer to.
    await create_price(
        client,
        keys,
        "cache_write_5m_tokens",
        match=GPT,
        relative_to={"meter": "input_tokens", "factor": "1.25"},
    )
    await create_price(
        client,
        keys,
        "cache_write_1h_tokens",
        match=GPT,
        per_units="1000",
        relative_to={"meter": "input_tokens", "factor": "2"},
    )
    await create_price(
        client, keys, "input_tokens", match=GPT, unit_amount="2.50", per_units="1000000"
    )
    await create_price(
        client,
        keys,
        "input_tokens",
        match=GPT,
        tenant_id="acme",
        unit_amount="2.00",
        per_units="1000000",
    )
    for tenant in ("acme", "globex"):
        await record(
            tenant,
            [
                Usage("input_tokens", "2026-10-03T10:00:00+00:00", 1_000_000, model="gpt-4o"),
                Usage("cache_write_5m_tokens", "2026-10-03T10:00:00+00:00", 400_000, "gpt-4o"),
                Usage("cache_write_1h_tokens", "2026-10-04T10:00:00+00:00", 300_000, "gpt-4o"),
                Usage("cache_write_5m_tokens", "2026-10-05T10:00:00+00:00", 50_000, "claude"),
                Usage("latency_ms", "2026-10-03T10:00:00+00:00", 1234, model="gpt-4o"),
                Usage("llm_requests", "2026-10-03T10:00:00+00:00", model="gpt-4o"),
                Usage("llm_requests", "2026-10-05T10:00:00+00:00", model="claude"),
            ],
        )


PER_M = "(per 1000000 tokens)"
CLAUDE_UNPRICED = (
    "cache_write_5m_tokens",
    "Cache writes (5m) — model=claude (unpriced)",
    {"model": "claude"},
    "50000",
    "0.00",
    "1",
    "0.00",
    None,
    True,
    None,
)


def expected(
    input_rate: str, five_min: str, five_amount: str, hour: str, hour_amount: str, input_amount: str
) -> list[tuple[object, ...]]:
    return [
        (
            "cache_write_1h_tokens",
            "Cache writes (1h) — model=gpt-4o — 2 times input_tokens (per 1000 tokens)",
            GPT,
            "300000",
            hour,
            "1000",
            hour_amount,
            None,
            False,
            None,
        ),
        CLAUDE_UNPRICED,
        (
            "cache_write_5m_tokens",
            f"Cache writes (5m) — model=gpt-4o — 1.25 times input_tokens {PER_M}",
            GPT,
            "400000",
            five_min,
            "1000000",
            five_amount,
            None,
            False,
            None,
        ),
        (
            "input_tokens",
            f"Input tokens — model=gpt-4o {PER_M}",
            GPT,
            "1000000",
            input_rate,
            "1000000",
            input_amount,
            None,
            False,
            None,
        ),
    ]


async def test_relative_prices_follow_the_override_and_non_billable_meters_stay_off(
    client: Client, keys: Keys, record: Record, billing: dict[str, str]
) -> None:
    await build(client, keys, record)
    # acme: input 2.00; 5m: 1.25 x 2.00 = 2.50 per 1M, 400k -> 1.00; 1h: 2 x 2.00 per 1M =
    # 0.004 per 1000, 300k -> 1.20; input 1M -> 2.00. Total 4.20.
    [acme] = await preview(client, billing, "acme", "2026-10")
    assert [brief(line) for line in acme["lines"]] == expected(
        "2.00", "2.50", "1.00", "0.004", "1.20", "2.00"
    )
    assert (acme["currency"], acme["total"]) == ("USD", "4.20")
    # globex pays list: 5m 1.25 x 2.50 = 3.125 per 1M, 400k -> 1.25; 1h 0.005 per 1000,
    # 300k -> 1.50; input 2.50. Total 5.25.
    [globex] = await preview(client, billing, "globex", "2026-10")
    assert [brief(line) for line in globex["lines"]] == expected(
        "2.50", "3.125", "1.25", "0.005", "1.50", "2.50"
    )
    assert globex["total"] == "5.25"
    # Finalized: the same lines, still without latency or requests.
    [final] = await finalized(client, billing, "acme", "2026-10")
    assert [brief(line) for line in final["lines"]] == [brief(line) for line in acme["lines"]]
    assert not {"latency_ms", "llm_requests"} & {line["meter"] for line in final["lines"]}


async def test_a_meter_made_non_billable_leaves_drafts_and_gets_no_adjustments(
    client: Client, keys: Keys, record: Record, billing: dict[str, str]
) -> None:
    await build(client, keys, record)
    await finalized(client, billing, "acme", "2026-10")
    off = await client.patch(
        "/v1/meters/cache_write_1h_tokens", json={"billable": False}, headers=keys.admin
    )
    assert off.status_code == 200, off.text
    [october] = await preview(client, billing, "globex", "2026-10")
    assert "cache_write_1h_tokens" not in {line["meter"] for line in october["lines"]}
    # acme's finalized October billed 1.20 for it: November neither credits nor re-bills it.
    [november] = await preview(client, billing, "acme", "2026-11")
    assert november["lines"] == []
