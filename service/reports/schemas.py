from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec


@dataclass(frozen=True, slots=True)
class LlmReportQuery:
    """An LLM report query as the caller spelled it; the service validates every part."""

    start: str | None = None
    end: str | None = None
    # Instead of start and end: a named range (service.common.periods).
    period: str | None = None
    tenant_id: str | None = None
    window_size: str | None = None
    timezone: str | None = None
    group_by: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)


class LlmReportRow(msgspec.Struct):
    """One group in one window [window_start, window_end).

    `requests` counts `llm_requests` events, split by their `status` dimension into `success`,
    `errors` and `canceled` (a request with another or no status is in `requests` only).
    Token figures are the meters' sums; `cache_write_tokens` adds the 5-minute and 1-hour
    writes. `cache_hit_rate` is cache_read / (cache_read + cache_write), rounded half-up to 6
    places, null when both are 0. `avg_latency_ms` and `avg_ttft_ms` are the meter's sum / its
    count (the calls that reported it), rounded half-up to 3 places, null without data. `cost`
    is the group's rated cost in the answer's currency, as GET /v1/costs gives it."""

    window_start: datetime
    window_end: datetime
    group: dict[str, str | None]
    requests: int
    success: int
    errors: int
    canceled: int
    input_tokens: str
    output_tokens: str
    cache_write_tokens: str
    cache_read_tokens: str
    cache_hit_rate: str | None
    avg_latency_ms: str | None
    avg_ttft_ms: str | None
    cost: str


class LlmReportOut(msgspec.Struct):
    """Rows in window order, then group values (absent first); one per window and group with
    usage of any LLM meter or a cost."""

    tenant_id: str
    currency: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    timezone: str = "UTC"
    window_size: str | None = None
    group_by: list[str] = msgspec.field(default_factory=list)
    rows: list[LlmReportRow] = msgspec.field(default_factory=list)
