from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import msgspec


class CostOrder(StrEnum):
    """`order_by`: rows by cost, ascending (`cost`) or descending (`-cost`)."""

    COST = "cost"
    COST_DESCENDING = "-cost"


@dataclass(frozen=True, slots=True)
class CostQuery:
    """A costs query as the caller spelled it; the service validates every part."""

    start: str | None = None
    end: str | None = None
    # Instead of start and end: a named range (service.common.periods).
    period: str | None = None
    tenant_id: str | None = None
    meter: str | None = None
    currency: str | None = None
    window_size: str | None = None
    timezone: str | None = None
    group_by: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    order_by: str | None = None
    limit: int | None = None


class MeterCost(msgspec.Struct):
    """One meter's priced usage in a row: its quantity (the sum, count or billed last value)
    and what it costs, an exact decimal shown with 12 places."""

    meter: str
    quantity: str
    cost: str


class CostRow(msgspec.Struct):
    """The cost of one group in one window [window_start, window_end): the sum of its meters'
    costs. Meters in event_name order; usage no price covers is not here (see `unpriced`)."""

    window_start: datetime
    window_end: datetime
    group: dict[str, str | None]
    cost: str
    meters: list[MeterCost]


class UnpricedQuantity(msgspec.Struct):
    """Usage of a billable meter that no price covers, over the whole answer."""

    meter: str
    quantity: str


class CostsOut(msgspec.Struct):
    """Rows ordered by window, then group values (absent first); with `order_by`, by cost
    (ties in that order). `total` is the cost of every row, `limit` or not; `truncated` says
    that `limit` left rows out."""

    tenant_id: str
    currency: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    timezone: str = "UTC"
    window_size: str | None = None
    group_by: list[str] = msgspec.field(default_factory=list)
    meter: str | None = None
    order_by: str | None = None
    limit: int | None = None
    rows: list[CostRow] = msgspec.field(default_factory=list)
    total: str = "0.000000000000"
    unpriced: list[UnpricedQuantity] = msgspec.field(default_factory=list)
    truncated: bool = False
