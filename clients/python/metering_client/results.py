"""Typed answers of the read and billing API. Quantities and money are `Decimal` (the service
sends them as decimal strings); fields the service adds later are ignored, not errors."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec


class UsageRow(msgspec.Struct, kw_only=True):
    window_start: datetime
    window_end: datetime
    group: dict[str, str | None] = {}
    value: Decimal | None = None
    sum: Decimal | None = None
    count: int = 0
    last: Decimal | None = None
    avg: Decimal | None = None


class Usage(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """GET /v1/usage for one meter."""

    tenant_id: str
    meter: str
    aggregation: str
    unit: str | None
    from_: datetime
    to: datetime
    timezone: str = "UTC"
    window_size: str | None = None
    group_by: list[str] = []
    order_by: str | None = None
    limit: int | None = None
    truncated: bool = False
    rows: list[UsageRow] = []


class MeterUsage(msgspec.Struct, kw_only=True):
    meter: str
    aggregation: str
    unit: str | None
    truncated: bool = False
    rows: list[UsageRow] = []


class UsageByMeter(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """GET /v1/usage without a meter: every meter's usage."""

    tenant_id: str
    from_: datetime
    to: datetime
    timezone: str = "UTC"
    window_size: str | None = None
    group_by: list[str] = []
    truncated: bool = False
    meters: list[MeterUsage] = []


class MeterCost(msgspec.Struct, kw_only=True):
    meter: str
    quantity: Decimal
    cost: Decimal


class UnpricedUsage(msgspec.Struct, kw_only=True):
    meter: str
    quantity: Decimal


class CostRow(msgspec.Struct, kw_only=True):
    window_start: datetime | None = None
    window_end: datetime | None = None
    group: dict[str, str | None] = {}
    cost: Decimal
    meters: list[MeterCost] = []


class Costs(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """GET /v1/costs: rated cost at full precision (12 decimal places), grouped like usage."""

    tenant_id: str
    currency: str
    from_: datetime
    to: datetime
    timezone: str = "UTC"
    window_size: str | None = None
    group_by: list[str] = []
    rows: list[CostRow] = []
    total: Decimal
    truncated: bool = False
    unpriced: list[UnpricedUsage] = []


class LlmReportRow(msgspec.Struct, kw_only=True):
    window_start: datetime | None = None
    window_end: datetime | None = None
    group: dict[str, str | None] = {}
    requests: int = 0
    success: int = 0
    errors: int = 0
    canceled: int = 0
    input_tokens: Decimal = Decimal(0)
    output_tokens: Decimal = Decimal(0)
    cache_write_tokens: Decimal = Decimal(0)
    cache_read_tokens: Decimal = Decimal(0)
    cache_hit_rate: Decimal | None = None
    avg_latency_ms: Decimal | None = None
    avg_ttft_ms: Decimal | None = None
    cost: Decimal | None = None


class LlmReport(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """GET /v1/reports/llm: requests, tokens, cache hit rate, latency and cost of LLM calls."""

    tenant_id: str
    currency: str | None = None
    from_: datetime
    to: datetime
    timezone: str = "UTC"
    window_size: str | None = None
    group_by: list[str] = []
    rows: list[LlmReportRow] = []


class InvoiceLine(msgspec.Struct, kw_only=True):
    kind: str = "usage"
    meter: str | None = None
    description: str = ""
    match: dict[str, str] = {}
    period_start: datetime | None = None
    period_end: datetime | None = None
    quantity: Decimal | None = None
    unit_amount: Decimal | None = None
    per_units: Decimal | None = None
    amount: Decimal
    price_id: str | None = None
    tier: int | None = None
    unpriced: bool = False
    adjusts_period: str | None = None


class Invoice(msgspec.Struct, kw_only=True):
    """A draft (preview: no id or number) or a finalized or void invoice."""

    id: str | None = None
    number: str | None = None
    tenant_id: str
    status: str
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[InvoiceLine] = []
    subtotal: Decimal
    total: Decimal
    finalized_at: datetime | None = None
    voided_at: datetime | None = None


class InvoicePage(msgspec.Struct, kw_only=True):
    items: list[Invoice]
    next_cursor: str | None = None
