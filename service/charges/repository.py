"""All SQL of recurring charges; every query takes the tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.charges.models import Charge


class ChargeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, charge: Charge) -> Charge:
        self.session.add(charge)
        await self.session.flush()
        await self.session.refresh(charge)
        return charge

    async def get(
        self, tenant_id: str, charge_id: uuid.UUID, *, for_update: bool = False
    ) -> Charge | None:
        query = select(Charge).where(Charge.tenant_id == tenant_id, Charge.id == charge_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(query)

    async def set_effective_to(self, charge: Charge, effective_to: datetime) -> Charge:
        charge.effective_to = effective_to
        await self.session.flush()
        await self.session.refresh(charge)
        return charge

    async def list_after(
        self, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> Sequence[Charge]:
        query = (
            select(Charge)
            .where(Charge.tenant_id == tenant_id)
            .order_by(Charge.effective_from, Charge.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(Charge.effective_from, Charge.id) > tuple_(*after))
        return (await self.session.scalars(query)).all()

    async def effective_in(
        self, tenant_id: str, start: datetime, end: datetime
    ) -> Sequence[Charge]:
        """The tenant's charges effective at some instant of `[start, end)`."""
        query = (
            select(Charge)
            .where(
                Charge.tenant_id == tenant_id,
                Charge.effective_from < end,
                or_(Charge.effective_to.is_(None), Charge.effective_to > start),
            )
            .order_by(Charge.effective_from, Charge.id)
        )
        return (await self.session.scalars(query)).all()
