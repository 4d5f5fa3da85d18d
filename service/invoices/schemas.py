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


class InvoiceLineOut(msgspec.Struct):
    """One line: a meter's usage at one price (one tier of a graduated price), or its usage
    that no price covers (`unpriced`, amount 0), or a prior-period adjustment
    (`adjusts_period` names the period whose late usage it bills)."""

    meter: str
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
