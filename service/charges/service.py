"""Recurring charge rules. Services never commit: the request's session does.

A charge is never edited but ended (`end`), so a seat change mid-month is an end plus a new
charge from that instant, and a past month's invoice keeps the charges it had."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from service.charges.models import Charge
from service.charges.rating import ChargeRule
from service.charges.repository import ChargeRepository
from service.charges.schemas import ChargeCreate, ChargeEnd, ChargeOut
from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.money import is_currency, render_amount, render_quantity
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

    async def _tenant(self, tenant_id: str, principal: Principal) -> Tenant:
        principal.ensure_tenant(tenant_id)
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist")
        return tenant

    async def create(self, tenant_id: str, data: ChargeCreate, principal: Principal) -> ChargeOut:
        tenant = await self._tenant(tenant_id, principal)
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
        await self._tenant(tenant_id, principal)
        after = None
        if cursor:
            effective_from, charge_id = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(effective_from), uuid.UUID(charge_id))
            except (TypeError, ValueError) as exc:
                raise InvalidInput("cursor is not one this API returned") from exc
        rows = await self.charges.list_after(tenant_id, after, limit + 1)
        items = [charge_out(charge) for charge in rows[:limit]]
        next_cursor = (
            encode_cursor([items[-1].effective_from.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    async def end(
        self, tenant_id: str, charge_id: uuid.UUID, data: ChargeEnd, principal: Principal
    ) -> ChargeOut:
        """Set the charge's effective_to (ending it, or moving its end); the same again is a
        no-op. Ending it inside a finalized month credits the rest of that month on the next
        invoice, as any change to a finalized period's billing does."""
        await self._tenant(tenant_id, principal)
        effective_to = price_instant(data.effective_to, "effective_to")
        charge = await self.charges.get(tenant_id, charge_id, for_update=True)
        if charge is None:
            raise NotFound(f"charge '{charge_id}' of tenant '{tenant_id}' does not exist")
        if effective_to <= charge.effective_from:
            raise _not_after(effective_to, charge.effective_from)
        if charge.effective_to != effective_to:
            charge = await self.charges.set_effective_to(charge, effective_to)
        return charge_out(charge)
