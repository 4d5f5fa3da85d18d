from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from service.common.schemas import Name, Slug

BudgetPeriod = Literal["day", "month"]
Attribution = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
ThresholdPercent = Annotated[int, msgspec.Meta(ge=1, le=1000)]


class BudgetLimit(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Either {meter, quantity} (a meter's quantity) or {cost} (spend, in the tenant's
    currency; `currency`, when given, must be it)."""

    meter: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    quantity: Annotated[Decimal, msgspec.Meta(description="decimal string or number")] | None = None
    cost: Annotated[Decimal, msgspec.Meta(description="decimal string or number")] | None = None
    currency: str | None = None


class BudgetScope(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only usage with these attribution values counts (all of it when empty)."""

    api_key_id: Attribution | None = None
    user_id: Attribution | None = None
    project_id: Attribution | None = None
    org_id: Attribution | None = None
    model: Attribution | None = None


class BudgetCreate(msgspec.Struct, forbid_unknown_fields=True):
    tenant_id: Slug
    name: Name
    period: BudgetPeriod
    limit: BudgetLimit
    scope: BudgetScope | None = None
    thresholds_percent: Annotated[list[ThresholdPercent], msgspec.Meta(max_length=10)] = (
        msgspec.field(default_factory=lambda: [80, 100])
    )


class LimitOut(msgspec.Struct, omit_defaults=True):
    """{meter, quantity} for a quantity budget, {cost, currency} for a cost budget."""

    meter: str | None = None
    quantity: str | None = None
    cost: str | None = None
    currency: str | None = None


class BudgetOut(msgspec.Struct):
    id: uuid.UUID
    tenant_id: str
    name: str
    period: str
    limit: LimitOut
    scope: BudgetScope
    thresholds_percent: list[int]
    created_at: datetime


class BudgetStanding(msgspec.Struct):
    """A budget in its current period: `used` and `remaining` (never below 0) as decimals (a
    cost budget's: 12 decimal places, as GET /v1/costs shows costs)."""

    id: uuid.UUID
    name: str
    used: str
    limit: LimitOut
    remaining: str
    period_start: datetime
    period_end: datetime
    exhausted: bool


class BudgetCheck(msgspec.Struct):
    """`allowed` is false when any matching budget is used up."""

    allowed: bool
    budgets: list[BudgetStanding]
