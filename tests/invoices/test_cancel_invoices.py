"""Canceled events on invoices, worked by hand: canceled before its period is finalized, an
event is billed as if never sent; canceled after, the next finalized invoice credits it with
negative prior-period adjustment lines (its total may then be negative).

The periods here (July and August 2026) are older than the default late-arrival window, past
which events can no longer be canceled, so cancels go through an app whose window is ten
years; everything else through the usual one."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from service.app import create_app
from tests.conftest import Keys, make_settings
from tests.invoices.conftest import Client, Record, finalized, preview
from tests.invoices.test_late_usage import calls, calls_line, lines_of, tokens, tokens_line
from tests.support.in_loop import in_loop_client

pytestmark = pytest.mark.usefixtures("catalog")

# The catalog of the late-usage tests: API calls, 1000 free then 0.01 (graduated), and
# gpt-4o tokens at 2.00 per 1M.
from tests.invoices.test_late_usage import catalog  # noqa: E402, F401


async def cancel_where(
    database_url: str, ingest: dict[str, str], pg_pool: asyncpg.Pool, sql: str
) -> int:
    """Cancel every event of acme that `sql` (a condition on events) selects; how many."""
    ids = await pg_pool.fetch(f"SELECT id FROM events WHERE tenant_id = 'acme' AND {sql}")
    settings = make_settings(database_url, late_arrival_days=3650, retention_days=3650)
    async with in_loop_client(create_app(settings)) as wide:
        for row in ids:
            answer = await wide.post(f"/v1/events/{row['id']}/cancel", headers=ingest)
            assert answer.status_code == 200, answer.text
    return len(ids)


async def july(record: Record, tenant_id: str, *, with_canceled: bool) -> None:
    """July: 950 calls and 1M tokens, plus (`with_canceled`) 150 calls on the 20th and a 250k
    token event that are canceled later."""
    await record(tenant_id, [*calls("2026-07-10", 950), tokens("2026-07-10T00:00:00+00:00", 10**6)])
    if with_canceled:
        await record(
            tenant_id, [*calls("2026-07-20", 150), tokens("2026-07-20T12:00:00+00:00", 250_000)]
        )


async def test_canceled_before_finalization_is_billed_as_never_sent(
    client: Client,
    keys: Keys,
    billing: dict[str, str],
    record: Record,
    database_url: str,
    pg_pool: asyncpg.Pool,
) -> None:
    answer = await client.post(
        "/v1/tenants", json={"id": "globex", "name": "G"}, headers=keys.admin
    )
    assert answer.status_code == 201, answer.text
    ingest = await keys.make("ingest", name="acme", tenant_id="acme")
    await july(record, "acme", with_canceled=True)
    await july(record, "globex", with_canceled=False)
    [draft] = await preview(client, billing, "acme", "2026-07")
    # 1100 calls: 1000 free, 100 at 0.01; 1.25M tokens at 2.00 per 1M.
    assert lines_of(draft) == [
        calls_line("1100", "0.01", "1.00", 2, None),
        tokens_line("1250000", "2.50", None),
    ]
    assert await cancel_where(database_url, ingest, pg_pool, "ts >= '2026-07-20'") == 151

    # 950 calls, all free; 1M tokens: 2.00.
    expected = [calls_line("950", "0.00", "0.00", 1, None), tokens_line("1000000", "2.00", None)]
    [draft] = await preview(client, billing, "acme", "2026-07")
    assert lines_of(draft) == expected and draft["total"] == "2.00"
    [invoice] = await finalized(client, billing, "acme", "2026-07")
    assert lines_of(invoice) == expected and invoice["total"] == "2.00"
    [never_sent] = await finalized(client, billing, "globex", "2026-07")

    def comparable(document: dict[str, Any]) -> Any:
        return [{k: v for k, v in line.items() if k != "id"} for line in document["lines"]]

    assert comparable(invoice) == comparable(never_sent)


async def test_canceled_after_finalization_is_credited_on_the_next_invoice(
    client: Client,
    keys: Keys,
    billing: dict[str, str],
    record: Record,
    database_url: str,
    pg_pool: asyncpg.Pool,
) -> None:
    ingest = await keys.make("ingest", name="acme", tenant_id="acme")
    await july(record, "acme", with_canceled=True)
    [july_invoice] = await finalized(client, billing, "acme", "2026-07")
    assert july_invoice["total"] == "3.50"  # 1.00 for calls, 2.50 for tokens
    july_document = (
        await client.get(f"/v1/invoices/{july_invoice['id']}", headers=billing)
    ).content
    await record("acme", [*calls("2026-08-03", 100), tokens("2026-08-03T00:00:00+00:00", 250_000)])

    assert (
        await cancel_where(
            database_url, ingest, pg_pool, "ts >= '2026-07-20' AND ts < '2026-08-01'"
        )
        == 151
    )

    expected = [
        # August: 100 calls (free), 250k tokens: 0.50.
        calls_line("100", "0.00", "0.00", 1, None),
        tokens_line("250000", "0.50", None),
        # July now: 950 calls, all free (billed: 1100 for 1.00); 1M tokens (billed 1.25M).
        calls_line("-150", "0.00", "-1.00", 1, "2026-07"),
        tokens_line("-250000", "-0.50", "2026-07"),
    ]
    [draft] = await preview(client, billing, "acme", "2026-08")
    assert lines_of(draft) == expected
    [august] = await finalized(client, billing, "acme", "2026-08")
    assert lines_of(august) == expected
    assert [line["kind"] for line in august["lines"]] == [
        "usage",
        "usage",
        "adjustment",
        "adjustment",
    ]
    # 0.50 - 1.00 - 0.50: a credit to settle.
    assert (august["subtotal"], august["total"]) == ("-1.00", "-1.00")
    # July's invoice never changes.
    again = await client.get(f"/v1/invoices/{july_invoice['id']}", headers=billing)
    assert again.content == july_document
    # Nothing left to adjust: September carries no July or August line.
    [september] = await finalized(client, billing, "acme", "2026-09")
    assert september["lines"] == [] and september["total"] == "0.00"
