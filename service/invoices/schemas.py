"""Invoice documents, as the API fixes them: decimals as strings, instants as RFC 3339 UTC.

The field order of these structs is the key order of the JSON document, which a finalized
invoice stores and serves byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

Period = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
        description="a calendar month in the tenant's time zone, YYYY-MM",
        examples=["2026-10"],
    ),
]
InvoiceStatus = Literal["draft", "finalized", "void"]


class FinalizeRequest(msgspec.Struct, forbid_unknown_fields=True):
    period: Period


LineKind = Literal["usage", "minimum", "charge", "commitment", "adjustment"]


class TierLineOut(msgspec.Struct):
    """The part of a tiered line's quantity (after free units) one tier billed."""

    tier: int  # 1-based
    up_to: str | None  # inclusive; null for the open-ended last tier
    quantity: str
    unit_amount: str  # per the line's per_units
    flat_amount: str  # counted on this line (when its usage entered the tier), else 0
    amount: str  # exact: quantity x unit_amount / per_units + flat_amount, not rounded


class InvoiceLineOut(msgspec.Struct, kw_only=True):
    """One line, by `kind`: `usage`, a meter's usage at one price for the period (a tiered
    price's tiers listed in `tiers`), or its usage that no price covers (`unpriced`, amount 0);
    `minimum`, the top-up of a price whose period amount is below its `minimum_amount`;
    `charge`, a recurring charge for the period (`meter` null, `charge_id`, `proration`);
    `commitment`, the true-up of a monthly minimum spend (`meter` null, `commitment_id`,
    `minimum_amount` the prorated commitment, `proration` its share of the period);
    `adjustment`, a prior-period correction (`adjusts_period` names the period whose late
    usage it bills, `adjusts_kind` the kind of line it corrects).

    Fields added after invoices were first stored have defaults, so stored lines still
    decode."""

    kind: LineKind = "usage"
    meter: str | None  # null on a charge line
    description: str
    match: dict[str, str]
    period_start: datetime
    period_end: datetime
    quantity: str
    unit_amount: str
    per_units: str
    amount: str  # exactly the currency's minor units
    tier: int | None
    unpriced: bool
    adjusts_period: str | None
    price_id: str | None
    adjusts_kind: LineKind | None = None
    # What applied: the tiers entered, the free units used, the packages billed (null when the
    # price has no such rule).
    tiers: list[TierLineOut] = msgspec.field(default_factory=list)
    free_units_applied: str | None = None
    packages: str | None = None
    # On a minimum line: the price's minimum; on a commitment line: the period's commitment.
    minimum_amount: str | None = None
    charge_id: str | None = None  # on a charge line
    commitment_id: str | None = None  # on a commitment line
    # On a charge line: the share of the period's seconds the charge was effective in, to 10
    # places (the amount uses the exact share); 1 when not prorated.
    proration: str | None = None


class InvoiceOut(msgspec.Struct):
    """A draft (computed on request: no id, no number) or a finalized or void invoice."""

    id: str | None
    number: str | None
    tenant_id: str
    status: InvoiceStatus
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[InvoiceLineOut]
    subtotal: str
    total: str
    finalized_at: datetime | None
    voided_at: datetime | None
