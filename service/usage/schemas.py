from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

import msgspec

Aggregation = Literal["sum", "count", "last", "max", "unique_count"]
# Most rows `limit` may keep per meter.
MAX_LIMIT = 10_000


class UsageOrder(StrEnum):
    """`order_by`: rows by the meter's value, ascending (`value`) or descending (`-value`)."""

    VALUE = "value"
    VALUE_DESCENDING = "-value"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A usage query as the caller spelled it; the service validates every part."""

    start: str | None = None
    end: str | None = None
    # Instead of start and end: a named range (service.common.periods).
    period: str | None = None
    tenant_id: str | None = None
    meter: str | None = None
    window_size: str | None = None
    timezone: str | None = None
    group_by: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    order_by: str | None = None
    limit: int | None = None


class UsageRow(msgspec.Struct):
    """Usage of one group in one window [window_start, window_end). Decimals are strings.
    `value` is what the meter's aggregation asks for (sum, count, last, the largest value for
    `max`, the number of distinct values of its unique_key for `unique_count`); `last` is the
    value of the latest event by timestamp (ties: the later-stored event); `avg` is sum/count
    rounded half-up to 12 decimal places, trailing zeros removed."""

    window_start: datetime
    window_end: datetime
    group: dict[str, str | None]
    value: str | None
    sum: str
    count: int
    last: str | None
    avg: str


class MeterUsage(msgspec.Struct):
    """One meter's rows, ordered by window_start, then group values (absent values first); with
    `order_by`, by value (rows without a value last), ties in that order. `truncated` says
    that `limit` left rows out."""

    meter: str
    aggregation: Aggregation
    unit: str | None
    rows: list[UsageRow]
    truncated: bool = False


class UsageOut(msgspec.Struct):
    """The answer for one meter (`meter` given)."""

    tenant_id: str
    meter: str
    aggregation: Aggregation
    unit: str | None
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    window_size: str | None = None
    timezone: str = "UTC"
    group_by: list[str] = msgspec.field(default_factory=list)
    order_by: str | None = None
    limit: int | None = None
    rows: list[UsageRow] = msgspec.field(default_factory=list)
    # True when `limit` left rows out.
    truncated: bool = False


class MetersUsageOut(msgspec.Struct):
    """The answer for every meter (no `meter` given, and the summary): one block per meter,
    ordered by event_name, including meters without usage in the range (empty rows)."""

    tenant_id: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    window_size: str | None = None
    timezone: str = "UTC"
    group_by: list[str] = msgspec.field(default_factory=list)
    order_by: str | None = None
    limit: int | None = None
    meters: list[MeterUsage] = msgspec.field(default_factory=list)
    # True when `limit` left rows out of any meter's block.
    truncated: bool = False
