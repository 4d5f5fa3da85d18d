"""All SQL of recurring charges; every query takes the tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from service.charges.models import Charge, Commitment


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


class CommitmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_tenant(self, tenant_id: str) -> None:
        """Serialize changes to the tenant's commitments until the transaction ends, so two
        requests cannot both pass the overlap check."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"commitments:{tenant_id}"},
        )

    async def add(self, commitment: Commitment) -> Commitment:
        self.session.add(commitment)
        await self.session.flush()
        await self.session.refresh(commitment)
        return commitment

    async def get(self, tenant_id: str, commitment_id: uuid.UUID) -> Commitment | None:
        return await self.session.scalar(
            select(Commitment).where(
                Commitment.tenant_id == tenant_id, Commitment.id == commitment_id
            )
        )

    async def set_effective_to(self, commitment: Commitment, effective_to: datetime) -> Commitment:
        commitment.effective_to = effective_to
        await self.session.flush()
        await self.session.refresh(commitment)
        return commitment

    async def in_currency(self, tenant_id: str, currency: str) -> Sequence[Commitment]:
        return (
            await self.session.scalars(
                select(Commitment).where(
                    Commitment.tenant_id == tenant_id, Commitment.currency == currency
                )
            )
        ).all()

    async def list_after(
        self, tenant_id: str, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> Sequence[Commitment]:
        query = (
            select(Commitment)
            .where(Commitment.tenant_id == tenant_id)
            .order_by(Commitment.effective_from, Commitment.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(Commitment.effective_from, Commitment.id) > tuple_(*after))
        return (await self.session.scalars(query)).all()

    async def effective_in(
        self, tenant_id: str, start: datetime, end: datetime
    ) -> Sequence[Commitment]:
        """The tenant's commitments effective at some instant of `[start, end)`."""
        query = (
            select(Commitment)
            .where(
                Commitment.tenant_id == tenant_id,
                Commitment.effective_from < end,
                or_(Commitment.effective_to.is_(None), Commitment.effective_to > start),
            )
            .order_by(Commitment.effective_from, Commitment.id)
        )
        return (await self.session.scalars(query)).all()
