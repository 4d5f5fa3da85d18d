"""`record_values` and `record_llm_call` against a real server: one event carrying several
meters' quantities, stored once, usage per meter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from metering_client import Client, Rejection, Tracker
from tests.clients.conftest import Setup, stored_events


def totals(
    setup: Setup, meter: str, group_by: tuple[str, ...] = ()
) -> dict[tuple[str | None, ...], Decimal]:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with Client(setup.base_url, setup.read_key) as client:
        usage = client.usage(
            meter,
            tenant_id="acme",
            start=today - timedelta(days=1),
            end=today + timedelta(days=2),
            group_by=group_by,
        )
    return {
        tuple(row.group.get(key) for key in group_by): row.value or Decimal(0) for row in usage.rows
    }


def test_an_llm_call_is_one_event_with_every_meter_and_dimension(
    setup: Setup, database_url: str
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=5)
    with Tracker(setup.base_url, setup.ingest_key, tenant_id="acme") as tracker:
        for streamed, status in ((True, "success"), (False, "success"), (True, "error")):
            tracker.record_llm_call(
                "anthropic",
                "claude-sonnet-4-5-20250929",
                "claude-sonnet-4-5",
                input_tokens=1000,
                output_tokens=0 if status == "error" else 200,
                cache_write_5m_tokens=300,
                cache_read_tokens=5000,
                streamed=streamed,
                status=status,
                error_code="overloaded" if status == "error" else None,
                latency_ms=800,
                ttft_ms=100 if streamed else None,
                user_tier="pro",
                operation="chat",
                user_id="u-1",
                timestamp=at,
            )
        again = tracker.record_llm_call(
            "anthropic",
            "claude-sonnet-4-5-20250929",
            input_tokens=5,
            idempotency_key="call-1",
            timestamp=at,
        )
        tracker.record_llm_call(
            "anthropic",
            "claude-sonnet-4-5-20250929",
            input_tokens=5,
            idempotency_key=again,
            timestamp=at,
        )
    stats = tracker.stats
    assert (stats.sent, stats.duplicates, stats.rejected) == (4, 1, 0)
    assert stored_events(database_url) == (4, 4)  # one row per call, whatever its meters
    assert totals(setup, "llm_requests", ("status",)) == {("success",): 3, ("error",): 1}
    assert totals(setup, "input_tokens", ("requested_model",)) == {
        ("claude-sonnet-4-5",): 3000,
        (None,): 5,
    }
    assert totals(setup, "output_tokens") == {(): 400}
    assert totals(setup, "cache_read_tokens", ("streamed",)) == {("true",): 10000, ("false",): 5000}
    assert totals(setup, "ttft_ms") == {(): 200}
    assert totals(setup, "latency_ms", ("model", "provider", "user_tier", "operation")) == {
        ("claude-sonnet-4-5-20250929", "anthropic", "pro", "chat"): 2400
    }


def test_values_are_stored_or_rejected_as_a_whole(setup: Setup, database_url: str) -> None:
    rejections: list[Rejection] = []
    with Tracker(
        setup.base_url, setup.ingest_key, tenant_id="acme", on_rejected=rejections.append
    ) as tracker:
        tracker.record_values(
            {"input_tokens": 10, "output_tokens": "2.5", "llm_requests": None},
            model="gpt-4o",
            dimensions={"provider": "openai"},
        )
        tracker.record_values({"input_tokens": 10, "output_tokens": -1})
    assert (tracker.stats.sent, tracker.stats.rejected) == (1, 1)
    [rejection] = rejections
    assert (rejection.status, rejection.field) == ("invalid", "values.output_tokens")
    assert stored_events(database_url) == (1, 1)
    assert totals(setup, "output_tokens") == {(): Decimal("2.5")}
    assert totals(setup, "input_tokens", ("provider",)) == {("openai",): 10}
