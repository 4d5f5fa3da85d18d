"""What the client builds and decides without a server: keys, LLM calls, backoff."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import msgspec
import pytest

from metering_client import Event, Tracker, uuid7
from metering_client._delivery import backoff, encode_batch, retry_after_seconds
from metering_client._events import EventFactory


def test_keys_are_uuid7_unique_and_ordered_by_time() -> None:
    keys = [uuid7() for _ in range(20_000)]
    assert len(set(keys)) == len(keys)
    parsed = uuid.UUID(keys[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    millis = int(keys[0].replace("-", "")[:12], 16)
    assert abs(millis / 1000 - datetime.now(UTC).timestamp()) < 60
    assert keys[0][:8] <= keys[-1][:8]


def test_an_llm_call_is_one_values_event_on_the_preset_meters() -> None:
    class Capture(Tracker):
        def _submit(self, event: Event) -> str:
            self.captured = event
            return event.idempotency_key

    tracker = Capture("http://127.0.0.1:1", "key", tenant_id="acme")
    tracker.record_llm_call(
        "anthropic",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5",
        input_tokens=1834,
        output_tokens=212,
        cache_read_tokens=5000,
        streamed=True,
        latency_ms=812,
        ttft_ms=95.5,
        user_tier="pro",
        operation="chat",
        user_id="u-1",
        idempotency_key="call-1",
    )
    event = msgspec.json.decode(encode_batch([tracker.captured]))["events"][0]
    assert event["values"] == {
        "llm_requests": None,
        "input_tokens": 1834,
        "output_tokens": 212,
        "cache_read_tokens": 5000,
        "latency_ms": 812,
        "ttft_ms": 95.5,
    }
    assert event["dimensions"] == {
        "provider": "anthropic",
        "requested_model": "claude-sonnet-4-5",
        "operation": "chat",
        "status": "success",
        "streamed": True,
        "user_tier": "pro",
    }
    assert (event["model"], event["user_id"], event["tenant_id"]) == (
        "claude-sonnet-4-5-20250929",
        "u-1",
        "acme",
    )
    assert event["idempotency_key"] == "call-1" and "event_name" not in event


def test_times_must_carry_a_zone() -> None:
    factory = EventFactory("acme")
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 (the mistake under test)
    with pytest.raises(ValueError, match="timezone-aware"):
        factory.event(
            "api_calls",
            1,
            tenant_id=None,
            idempotency_key=None,
            timestamp=naive,
            org_id=None,
            project_id=None,
            api_key_id=None,
            user_id=None,
            model=None,
            dimensions=None,
            metadata=None,
        )


def test_backoff_grows_with_jitter_and_respects_retry_after() -> None:
    for attempt, ceiling in ((0, 0.2), (3, 1.6), (20, 30.0)):
        delays = [backoff(attempt, None) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1
    assert backoff(0, 7.0) == 7.0


def test_retry_after_as_seconds_or_a_date() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_seconds(later) or 0) <= 31
