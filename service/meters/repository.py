"""All SQL for meters and prices."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.meters.models import Meter, Price


class MeterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_name: str, *, for_update: bool = False) -> Meter | None:
        """`for_update` locks the meter row until the request's transaction ends: changes to
        its prices (and to its aggregation) are serialized per meter that way."""
        query = select(Meter).where(Meter.event_name == event_name)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(query)

    async def get_by_id(self, meter_id: int, *, for_update: bool = False) -> Meter | None:
        query = select(Meter).where(Meter.id == meter_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(query)

    async def add(self, values: dict[str, Any]) -> Meter | None:
        """Insert a meter; None when its event_name is taken (also by a concurrent request)."""
        statement = (
            insert(Meter)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[Meter.event_name])
            .returning(Meter)
        )
        return await self.session.scalar(statement)

    async def list_after(
        self, after_event_name: str | None, limit: int, status: str | None
    ) -> Sequence[Meter]:
        query = select(Meter).order_by(Meter.event_name).limit(limit)
        if after_event_name is not None:
            query = query.where(Meter.event_name > after_event_name)
        if status is not None:
            query = query.where(Meter.status == status)
        return (await self.session.scalars(query)).all()

    async def update(self, meter: Meter, changes: dict[str, Any]) -> Meter:
        for key, value in changes.items():
            setattr(meter, key, value)
        meter.updated_at = func.now()  # type: ignore[assignment]
        await self.session.flush()
        await self.session.refresh(meter)
        return meter


class PriceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, price: Price) -> Price:
        self.session.add(price)
        await self.session.flush()
        await self.session.refresh(price)
        return price

    async def get(self, price_id: uuid.UUID, *, for_update: bool = False) -> Price | None:
        query = select(Price).where(Price.id == price_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(query)

    async def lock_price_references(self) -> None:
        """Serialize changes to the graph of relative-price references (new relative prices,
        meter currency changes) until the transaction ends, so two concurrent requests cannot
        close a cycle between them. Always taken before any meter row lock, so it never waits
        while holding one."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": "prices:references"},
        )

    async def references(self) -> dict[str, set[str]]:
        """Each meter (event_name) to the meters its relative prices refer to, over every
        tenant and time: a cycle at any of them could be followed by some usage."""
        query = (
            select(Meter.event_name, Price.relative_to_meter)
            .join(Meter, Price.meter_id == Meter.id)
            .where(Price.relative_to_meter.is_not(None))
            .distinct()
        )
        graph: dict[str, set[str]] = {}
        for source, target in await self.session.execute(query):
            if target is not None:
                graph.setdefault(source, set()).add(target)
        return graph

    async def referring_meters(self, event_name: str) -> list[str]:
        """Meters with relative prices that refer to `event_name`."""
        query = (
            select(Meter.event_name)
            .join(Price, Price.meter_id == Meter.id)
            .where(Price.relative_to_meter == event_name)
            .distinct()
            .order_by(Meter.event_name)
        )
        return list((await self.session.scalars(query)).all())

    async def referred_meters(self, meter_id: int) -> list[str]:
        """Meters that `meter_id`'s relative prices refer to."""
        query = (
            select(Price.relative_to_meter)
            .where(Price.meter_id == meter_id, Price.relative_to_meter.is_not(None))
            .distinct()
        )
        return sorted(name for name in (await self.session.scalars(query)).all() if name)

    async def exists_for_meter(self, meter_id: int) -> bool:
        query = select(Price.id).where(Price.meter_id == meter_id).limit(1)
        return await self.session.scalar(query) is not None

    async def get_with_meter(self, price_id: uuid.UUID) -> tuple[Price, Meter] | None:
        query = select(Price, Meter).join(Meter, Price.meter_id == Meter.id)
        row = (await self.session.execute(query.where(Price.id == price_id))).first()
        return None if row is None else (row[0], row[1])

    async def for_tenant_level(self, meter_id: int, tenant_id: str | None) -> Sequence[Price]:
        """The meter's list prices (tenant_id None) or one tenant's overrides, never both."""
        query = select(Price).where(
            Price.meter_id == meter_id, Price.tenant_id.is_not_distinct_from(tenant_id)
        )
        return (await self.session.scalars(query.order_by(Price.effective_from))).all()

    async def applicable_to(self, meter_id: int, tenant_id: str | None) -> Sequence[Price]:
        """The meter's list prices plus, when tenant_id is given, that tenant's overrides."""
        query = select(Price).where(Price.meter_id == meter_id)
        if tenant_id is None:
            query = query.where(Price.tenant_id.is_(None))
        else:
            query = query.where(or_(Price.tenant_id.is_(None), Price.tenant_id == tenant_id))
        return (await self.session.scalars(query.order_by(Price.effective_from, Price.id))).all()

    async def list_after(
        self,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        *,
        meter_id: int | None,
        tenant_id: str | None,
        visible_to_tenant: str | None,
    ) -> list[tuple[Price, Meter]]:
        """Prices (with their meter) by creation; `visible_to_tenant` restricts to list prices
        and that tenant's overrides (what a tenant-bound key may see)."""
        query = (
            select(Price, Meter)
            .join(Meter, Price.meter_id == Meter.id)
            .order_by(Price.created_at, Price.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(Price.created_at, Price.id) > tuple_(*after))
        if meter_id is not None:
            query = query.where(Price.meter_id == meter_id)
        if tenant_id is not None:
            query = query.where(Price.tenant_id == tenant_id)
        if visible_to_tenant is not None:
            query = query.where(
                or_(Price.tenant_id.is_(None), Price.tenant_id == visible_to_tenant)
            )
        return [(row[0], row[1]) for row in await self.session.execute(query)]

    async def set_effective_to(self, price: Price, effective_to: datetime) -> Price:
        price.effective_to = effective_to
        await self.session.flush()
        await self.session.refresh(price)
        return price
