"""The LLM preset: the meters an LLM gateway's per-call records need, created when missing.

Token meters are billable sums; the request count, latency and time to first token are metered
but not billed (a request count can be made billable with PATCH). Every preset meter declares
the same dimensions, so usage of any of them can be grouped and filtered alike.
"""

from __future__ import annotations

from dataclasses import dataclass

LLM_DIMENSIONS = (
    "provider",
    "requested_model",  # the model the caller asked for; `model` is the one that answered
    "operation",  # chat, embeddings, ... (OpenTelemetry's gen_ai.operation.name)
    "status",  # success | error | canceled
    "error_code",
    "streamed",
    "user_tier",
)
DEFAULT_CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class PresetMeter:
    event_name: str
    name: str
    description: str
    unit: str | None
    aggregation: str
    billable: bool
    priced: bool  # created with the preset's currency (latency and TTFT get none)


LLM_PRESET = (
    PresetMeter(
        "llm_requests", "LLM requests", "LLM calls, one per event", "requests", "count",
        billable=False, priced=True,
    ),
    PresetMeter(
        "input_tokens", "Input tokens", "Prompt tokens not read from a cache", "tokens", "sum",
        billable=True, priced=True,
    ),
    PresetMeter(
        "output_tokens", "Output tokens", "Completion tokens", "tokens", "sum",
        billable=True, priced=True,
    ),
    PresetMeter(
        "cache_write_5m_tokens", "Cache write tokens (5 minutes)",
        "Prompt tokens written to a cache kept 5 minutes", "tokens", "sum",
        billable=True, priced=True,
    ),
    PresetMeter(
        "cache_write_1h_tokens", "Cache write tokens (1 hour)",
        "Prompt tokens written to a cache kept 1 hour", "tokens", "sum",
        billable=True, priced=True,
    ),
    PresetMeter(
        "cache_read_tokens", "Cache read tokens", "Prompt tokens read from a cache", "tokens",
        "sum", billable=True, priced=True,
    ),
    PresetMeter(
        "latency_ms", "Latency", "Time from request to the last byte of the answer", "ms",
        "sum", billable=False, priced=False,
    ),
    PresetMeter(
        "ttft_ms", "Time to first token", "Time from request to the first answer token", "ms",
        "sum", billable=False, priced=False,
    ),
)  # fmt: skip
