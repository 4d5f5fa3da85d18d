"""Recurring charge and commitment rules. Services never commit: the request's session does.

A charge is never edited but ended (`end`), so a seat change mid-month is an end plus a new
charge from that instant, and a past month's invoice keeps the charges it had."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from service.charges.errors import CommitmentOverlap
from service.charges.models import Charge, Commitment
from service.charges.rating import ChargeRule, CommitmentRule
from service.charges.repository import ChargeRepository, CommitmentRepository
from service.charges.schemas import (
    ChargeCreate,
    ChargeEnd,
    ChargeOut,
    CommitmentCreate,
    CommitmentEnd,
    CommitmentOut,
)
from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.money import (
    currency_exponent,
    decimal_places,
    is_currency,
    render_amount,
    render_quantity,
)
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.meters.service import exact_decimal, price_instant
from service.tenants.models import Tenant
from service.tenants.repository import TenantRepository


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def charge_out(charge: Charge) -> ChargeOut:
    return ChargeOut(
        id=charge.id,
        tenant_id=charge.tenant_id,
        name=charge.name,
        unit_amount=render_amount(charge.unit_amount, charge.currency),
        quantity=render_quantity(charge.quantity),
        currency=charge.currency,
        effective_from=charge.effective_from,
        effective_to=charge.effective_to,
        prorate=charge.prorate,
        created_at=charge.created_at,
    )


def charge_rule(charge: Charge) -> ChargeRule:
    """The pure view of a stored charge that invoices rate."""
    return ChargeRule(
        id=str(charge.id),
        name=charge.name,
        unit_amount=charge.unit_amount,
        quantity=charge.quantity,
        currency=charge.currency,
        effective_from=charge.effective_from,
        effective_to=charge.effective_to,
        prorate=charge.prorate,
    )


def _not_after(effective_to: datetime, effective_from: datetime) -> InvalidInput:
    return InvalidInput(
        f"effective_to ({_rfc3339(effective_to)}) must be after effective_from "
        f"({_rfc3339(effective_from)})",
        errors=[FieldError(field="effective_to", message="not after effective_from")],
    )


class ChargeService:
    def __init__(self, session: AsyncSession) -> None:
        self.charges = ChargeRepository(session)
        self.tenants = TenantRepository(session)

    async def tenant(self, tenant_id: str, principal: Principal) -> Tenant:
        """The tenant, for a key allowed to touch it; 404 when it does not exist."""
        principal.ensure_tenant(tenant_id)
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist")
        return tenant

    async def create(self, tenant_id: str, data: ChargeCreate, principal: Principal) -> ChargeOut:
        tenant = await self.tenant(tenant_id, principal)
        unit_amount = exact_decimal(data.unit_amount, "unit_amount")
        quantity = (
            Decimal(1)
            if data.quantity is None
            else exact_decimal(data.quantity, "quantity", positive=True)
        )
        currency = data.currency or tenant.currency
        if not is_currency(currency):
            raise InvalidInput(
                f"'{currency}' is not an ISO 4217 currency code (e.g. 'USD', 'EUR', 'JPY')",
                errors=[FieldError(field="currency", message="unknown ISO 4217 currency")],
            )
        effective_from = price_instant(data.effective_from, "effective_from")
        effective_to = None
        if data.effective_to is not None:
            effective_to = price_instant(data.effective_to, "effective_to")
            if effective_to <= effective_from:
                raise _not_after(effective_to, effective_from)
        charge = await self.charges.add(
            Charge(
                tenant_id=tenant.id,
                id=uuid.uuid4(),
                name=data.name,
                unit_amount=unit_amount,
                quantity=quantity,
                currency=currency,
                effective_from=effective_from,
                effective_to=effective_to,
                prorate=data.prorate,
            )
        )
        return charge_out(charge)

    async def list(
        self, tenant_id: str, cursor: str | None, limit: int, principal: Principal
    ) -> Page[ChargeOut]:
        await self.tenant(tenant_id, principal)
        rows = await self.charges.list_after(tenant_id, _after(cursor), limit + 1)
        return _page([charge_out(charge) for charge in rows], limit)

    async def end(
        self, tenant_id: str, charge_id: uuid.UUID, data: ChargeEnd, principal: Principal
    ) -> ChargeOut:
        """Set the charge's effective_to (ending it, or moving its end); the same again is a
        no-op. Ending it inside a finalized month credits the rest of that month on the next
        invoice, as any change to a finalized period's billing does."""
        await self.tenant(tenant_id, principal)
        effective_to = price_instant(data.effective_to, "effective_to")
        charge = await self.charges.get(tenant_id, charge_id, for_update=True)
        if charge is None:
            raise NotFound(f"charge '{charge_id}' of tenant '{tenant_id}' does not exist")
        if effective_to <= charge.effective_from:
            raise _not_after(effective_to, charge.effective_from)
        if charge.effective_to != effective_to:
            charge = await self.charges.set_effective_to(charge, effective_to)
        return charge_out(charge)


# Commitments ------------------------------------------------------------------------------


def commitment_out(commitment: Commitment) -> CommitmentOut:
    return CommitmentOut(
        id=commitment.id,
        tenant_id=commitment.tenant_id,
        amount=render_amount(commitment.amount, commitment.currency),
        currency=commitment.currency,
        effective_from=commitment.effective_from,
        effective_to=commitment.effective_to,
        created_at=commitment.created_at,
    )


def commitment_rule(commitment: Commitment) -> CommitmentRule:
    return CommitmentRule(
        id=str(commitment.id),
        amount=commitment.amount,
        currency=commitment.currency,
        effective_from=commitment.effective_from,
        effective_to=commitment.effective_to,
    )


def _intersect(
    a_from: datetime, a_to: datetime | None, b_from: datetime, b_to: datetime | None
) -> bool:
    return (b_to is None or a_from < b_to) and (a_to is None or b_from < a_to)


class CommitmentService:
    """A tenant's commitments in one currency never overlap in time (409), so a month owes
    the sum of the ones it contains, each prorated."""

    def __init__(self, session: AsyncSession) -> None:
        self.commitments = CommitmentRepository(session)
        self.charges = ChargeService(session)

    async def _refuse_overlap(
        self,
        tenant_id: str,
        currency: str,
        effective_from: datetime,
        effective_to: datetime | None,
        ignore: uuid.UUID | None = None,
    ) -> None:
        for other in await self.commitments.in_currency(tenant_id, currency):
            if other.id == ignore:
                continue
            if _intersect(effective_from, effective_to, other.effective_from, other.effective_to):
                until = _rfc3339(other.effective_to) if other.effective_to else "open-ended"
                raise CommitmentOverlap(
                    f"commitment {other.id} ({currency}, from {_rfc3339(other.effective_from)} "
                    f"until {until}) already covers part of that time; end it first with "
                    f"POST /v1/tenants/{tenant_id}/commitments/{other.id}/end, or start this "
                    "one when it ends"
                )

    async def create(
        self, tenant_id: str, data: CommitmentCreate, principal: Principal
    ) -> CommitmentOut:
        tenant = await self.charges.tenant(tenant_id, principal)
        currency = data.currency or tenant.currency
        if not is_currency(currency):
            raise InvalidInput(
                f"'{currency}' is not an ISO 4217 currency code (e.g. 'USD', 'EUR', 'JPY')",
                errors=[FieldError(field="currency", message="unknown ISO 4217 currency")],
            )
        amount = exact_decimal(data.amount, "amount", positive=True)
        places = currency_exponent(currency)
        if decimal_places(amount) > places:
            raise InvalidInput(
                f"amount ({data.amount}) must be an amount in {currency}, at most {places} "
                "decimal places (its minor units)",
                errors=[FieldError(field="amount", message=f"more than {places} decimal places")],
            )
        effective_from = price_instant(data.effective_from, "effective_from")
        effective_to = None
        if data.effective_to is not None:
            effective_to = price_instant(data.effective_to, "effective_to")
            if effective_to <= effective_from:
                raise _not_after(effective_to, effective_from)
        await self.commitments.lock_tenant(tenant.id)
        await self._refuse_overlap(tenant.id, currency, effective_from, effective_to)
        commitment = await self.commitments.add(
            Commitment(
                tenant_id=tenant.id,
                id=uuid.uuid4(),
                amount=amount,
                currency=currency,
                effective_from=effective_from,
                effective_to=effective_to,
            )
        )
        return commitment_out(commitment)

    async def list(
        self, tenant_id: str, cursor: str | None, limit: int, principal: Principal
    ) -> Page[CommitmentOut]:
        await self.charges.tenant(tenant_id, principal)
        rows = await self.commitments.list_after(tenant_id, _after(cursor), limit + 1)
        return _page([commitment_out(row) for row in rows], limit)

    async def end(
        self, tenant_id: str, commitment_id: uuid.UUID, data: CommitmentEnd, principal: Principal
    ) -> CommitmentOut:
        """Set the commitment's effective_to (ending it, or moving its end, subject to the
        overlap rule); the same again is a no-op."""
        await self.charges.tenant(tenant_id, principal)
        effective_to = price_instant(data.effective_to, "effective_to")
        await self.commitments.lock_tenant(tenant_id)
        commitment = await self.commitments.get(tenant_id, commitment_id)
        if commitment is None:
            raise NotFound(f"commitment '{commitment_id}' of tenant '{tenant_id}' does not exist")
        if effective_to <= commitment.effective_from:
            raise _not_after(effective_to, commitment.effective_from)
        if commitment.effective_to != effective_to:
            await self._refuse_overlap(
                tenant_id,
                commitment.currency,
                commitment.effective_from,
                effective_to,
                ignore=commitment.id,
            )
            commitment = await self.commitments.set_effective_to(commitment, effective_to)
        return commitment_out(commitment)


def _after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The (effective_from, id) a page of charges or commitments starts after."""
    if not cursor:
        return None
    effective_from, row_id = decode_cursor(cursor, 2)
    try:
        return (datetime.fromisoformat(effective_from), uuid.UUID(row_id))
    except (TypeError, ValueError) as exc:
        raise InvalidInput("cursor is not one this API returned") from exc


class _Keyed(Protocol):
    effective_from: datetime
    id: uuid.UUID


_Item = TypeVar("_Item", bound=_Keyed)


def _page(items: list[_Item], limit: int) -> Page[_Item]:
    """The first `limit` of `items` (fetched one more than a page) and the next cursor."""
    shown = items[:limit]
    next_cursor = (
        encode_cursor([shown[-1].effective_from.isoformat(), str(shown[-1].id)])
        if len(items) > limit
        else None
    )
    return Page(items=shown, next_cursor=next_cursor)
