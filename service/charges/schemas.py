from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from service.common.schemas import CurrencyCode, Name
from service.meters.schemas import ExactDecimal


class ChargeCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    # Per unit and month, in `currency`.
    unit_amount: ExactDecimal
    # On 15-minute UTC boundaries; effective_to is exclusive, null = open-ended.
    effective_from: datetime
    effective_to: datetime | None = None
    quantity: ExactDecimal | None = None  # default 1
    currency: CurrencyCode | None = None  # default: the tenant's
    # False: a month the charge is effective in at all bills it in full.
    prorate: bool = True


class ChargeEnd(msgspec.Struct, forbid_unknown_fields=True):
    effective_to: datetime


class ChargeOut(msgspec.Struct):
    id: uuid.UUID
    tenant_id: str
    name: str
    unit_amount: str
    quantity: str
    currency: str
    effective_from: datetime
    effective_to: datetime | None
    prorate: bool
    created_at: datetime


class CommitmentCreate(msgspec.Struct, forbid_unknown_fields=True):
    # Per month, in `currency` (at most its minor units).
    amount: ExactDecimal
    effective_from: datetime
    effective_to: datetime | None = None
    currency: CurrencyCode | None = None  # default: the tenant's


class CommitmentEnd(msgspec.Struct, forbid_unknown_fields=True):
    effective_to: datetime


class CommitmentOut(msgspec.Struct):
    id: uuid.UUID
    tenant_id: str
    amount: str
    currency: str
    effective_from: datetime
    effective_to: datetime | None
    created_at: datetime
