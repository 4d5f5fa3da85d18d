"""All SQL of invoices: the tenant's meters and prices, and the stored invoices with their
gapless numbering. Period usage is read through the rollup store (service.rollups)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.invoices.models import Invoice, InvoiceCounter
from service.invoices.rating import MeterInfo
from service.meters.models import Meter, Price
from service.meters.pricing import PriceRule, to_price_rule


@dataclass(frozen=True, slots=True)
class MeterPricing:
    """One billable meter as one tenant's invoices see it: its list prices and the tenant's
    overrides, plus those of every meter its relative prices refer to (directly or not), which
    rating needs to resolve them; their boundaries split the period too."""

    meter_id: int
    info: MeterInfo
    prices: tuple[PriceRule, ...]

    @property
    def group_keys(self) -> tuple[str, ...]:
        """The attribute keys any of its prices match on: usage is grouped by their values."""
        return tuple(sorted({key for price in self.prices for key in price.match}))


def _with_references(event_name: str, prices: dict[str, list[PriceRule]]) -> tuple[PriceRule, ...]:
    """The meter's prices and those of the meters its relative prices refer to, transitively."""
    collected: list[PriceRule] = []
    pending, seen = [event_name], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for price in prices.get(name, ()):
            collected.append(price)
            if price.relative_to is not None:
                pending.append(price.relative_to.meter)
    return tuple(collected)


async def load_pricing(session: AsyncSession, tenant_id: str) -> list[MeterPricing]:
    """Every billable meter (archived ones too: their history stays billable) with the prices
    that may apply to `tenant_id`, ordered by event_name. Meters that are not billable are
    never invoiced, but their prices may be referred to by relative prices."""
    meters = (
        await session.scalars(
            select(Meter).where(Meter.billable.is_(True)).order_by(Meter.event_name)
        )
    ).all()
    rows = await session.execute(
        select(Price, Meter)
        .join(Meter, Price.meter_id == Meter.id)
        .where(or_(Price.tenant_id.is_(None), Price.tenant_id == tenant_id))
        .order_by(Price.effective_from, Price.id)
    )
    return _pricing(meters, rows.tuples())


# The same reads as load_pricing, for callers holding a driver connection (ingestion).
_BILLABLE_METERS_SQL = """
SELECT id, event_name, name, unit, aggregation, currency FROM meters
WHERE billable ORDER BY event_name
"""
_PRICES_SQL = """
SELECT p.id, p.tenant_id, p.unit_amount, p.per_units, p.relative_to_meter, p.relative_factor,
       p.match::text AS match, p.tiers::text AS tiers, p.tier_mode, p.free_units,
       p.package_size, p.minimum_amount, p.effective_from, p.effective_to,
       m.event_name AS meter_event_name, m.currency AS meter_currency
FROM prices AS p JOIN meters AS m ON m.id = p.meter_id
WHERE p.tenant_id IS NULL OR p.tenant_id = $1
ORDER BY p.effective_from, p.id
"""


async def load_pricing_driver(connection: Any, tenant_id: str) -> list[MeterPricing]:
    """load_pricing on an asyncpg connection (in its transaction): the same meters and prices."""
    meters = [Meter(**dict(row)) for row in await connection.fetch(_BILLABLE_METERS_SQL)]
    rows = []
    for record in await connection.fetch(_PRICES_SQL, tenant_id):
        values = dict(record)
        meter = Meter(
            event_name=values.pop("meter_event_name"), currency=values.pop("meter_currency")
        )
        values["match"] = json.loads(values["match"])
        values["tiers"] = json.loads(values["tiers"])
        rows.append((Price(**values), meter))
    return _pricing(meters, rows)


def _pricing(meters: Sequence[Meter], rows: Iterable[tuple[Price, Meter]]) -> list[MeterPricing]:
    prices: dict[str, list[PriceRule]] = {}
    for price, meter in rows:
        prices.setdefault(meter.event_name, []).append(to_price_rule(price, meter))
    return [
        MeterPricing(
            meter_id=meter.id,
            info=MeterInfo(
                event_name=meter.event_name,
                name=meter.name,
                unit=meter.unit,
                aggregation=meter.aggregation,
                currency=meter.currency,
                unique_key=meter.unique_key,
            ),
            prices=_with_references(meter.event_name, prices),
        )
        for meter in meters
        if meter.currency is not None  # always: a billable meter has a currency
    ]


@dataclass(frozen=True, slots=True)
class InvoiceSummary:
    """What late-usage adjustments need to know of a stored invoice."""

    period: str
    period_start: datetime
    period_end: datetime
    status: str
    finalized_at: datetime
    voided_at: datetime | None
    adjusts: frozenset[str]  # the periods its adjustment lines bill


class InvoiceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_tenant(self, tenant_id: str) -> None:
        """Serialize finalizing and voiding per tenant until the transaction ends, so the
        one-invoice-per-period check and the numbering cannot race."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"invoices:{tenant_id}"},
        )

    async def next_number(self, tenant_id: str) -> int:
        """The tenant's next invoice number, taken in the caller's transaction: a transaction
        that rolls back gives its number back, so numbers have no gaps."""
        statement = (
            insert(InvoiceCounter)
            .values(tenant_id=tenant_id, last_number=1)
            .on_conflict_do_update(
                index_elements=[InvoiceCounter.tenant_id],
                set_={"last_number": InvoiceCounter.last_number + 1},
            )
            .returning(InvoiceCounter.last_number)
        )
        number = await self.session.scalar(statement)
        assert number is not None
        return number

    async def add(self, invoice: Invoice) -> None:
        self.session.add(invoice)
        await self.session.flush()

    async def get(self, invoice_id: uuid.UUID, *, for_update: bool = False) -> Invoice | None:
        query = select(Invoice).where(Invoice.id == invoice_id)
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(query)

    async def live_numbers_for_period(self, tenant_id: str, period: str) -> list[str]:
        query = select(Invoice.number).where(
            Invoice.tenant_id == tenant_id, Invoice.period == period, Invoice.status == "finalized"
        )
        return list((await self.session.scalars(query.order_by(Invoice.number))).all())

    async def live_numbers_adjusting(self, tenant_id: str, period: str) -> list[str]:
        """Numbers of live invoices that carry adjustment lines for `period`."""
        query = select(Invoice.number).where(
            Invoice.tenant_id == tenant_id,
            Invoice.status == "finalized",
            Invoice.lines.contains([{"adjusts_period": period}]),
        )
        return list((await self.session.scalars(query.order_by(Invoice.number))).all())

    async def summaries(self, tenant_id: str) -> list[InvoiceSummary]:
        """Every invoice of the tenant, void ones too, without documents."""
        statement = text(
            """
            SELECT period, period_start, period_end, status, finalized_at, voided_at,
                   ARRAY(SELECT DISTINCT line ->> 'adjusts_period'
                         FROM jsonb_array_elements(lines) AS line
                         WHERE line ->> 'adjusts_period' IS NOT NULL) AS adjusts
            FROM invoices
            WHERE tenant_id = :tenant_id
            """
        )
        rows = await self.session.execute(statement, {"tenant_id": tenant_id})
        return [
            InvoiceSummary(
                period=row.period,
                period_start=row.period_start,
                period_end=row.period_end,
                status=row.status,
                finalized_at=row.finalized_at,
                voided_at=row.voided_at,
                adjusts=frozenset(row.adjusts),
            )
            for row in rows
        ]

    async def live_lines_since(
        self, tenant_id: str, period: str
    ) -> list[tuple[str, str, list[dict[str, Any]]]]:
        """(period, currency, lines) of the live invoices of `period` and later periods: the
        only invoices that can bill usage of `period` (adjustments name earlier periods)."""
        query = select(Invoice.period, Invoice.currency, Invoice.lines).where(
            Invoice.tenant_id == tenant_id,
            Invoice.status == "finalized",
            Invoice.period >= period,
        )
        return [(row[0], row[1], row[2]) for row in await self.session.execute(query)]

    async def list_after(
        self,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
        *,
        tenant_id: str | None,
        status: str | None,
        period: str | None,
    ) -> Sequence[Invoice]:
        query = select(Invoice).order_by(Invoice.finalized_at, Invoice.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(Invoice.finalized_at, Invoice.id) > tuple_(*after))
        if tenant_id is not None:
            query = query.where(Invoice.tenant_id == tenant_id)
        if status is not None:
            query = query.where(Invoice.status == status)
        if period is not None:
            query = query.where(Invoice.period == period)
        return (await self.session.scalars(query)).all()

    async def mark_void(self, invoice: Invoice, voided_at: datetime, document: str) -> None:
        await self.session.execute(
            update(Invoice)
            .where(Invoice.tenant_id == invoice.tenant_id, Invoice.id == invoice.id)
            .values(status="void", voided_at=voided_at, document=document)
        )
