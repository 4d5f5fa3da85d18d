"""All SQL of invoices: the tenant's meters and prices, period usage from rollups, and the
stored invoices with their gapless numbering."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, TIMESTAMP, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from service.events.models import ATTRIBUTION_FIELDS
from service.invoices.models import Invoice, InvoiceCounter
from service.invoices.rating import MeterInfo
from service.meters.models import Meter, Price
from service.meters.pricing import PriceRule
from service.meters.service import to_price_rule


@dataclass(frozen=True, slots=True)
class MeterPricing:
    """One meter as one tenant's invoices see it: its list prices and the tenant's overrides."""

    meter_id: int
    info: MeterInfo
    prices: tuple[PriceRule, ...]

    @property
    def group_keys(self) -> tuple[str, ...]:
        """The attribute keys any of its prices match on: usage is grouped by their values."""
        return tuple(sorted({key for price in self.prices for key in price.match}))


async def load_pricing(session: AsyncSession, tenant_id: str) -> list[MeterPricing]:
    """Every meter (archived ones too: their history stays billable) with the prices that
    may apply to `tenant_id`, ordered by event_name."""
    meters = (await session.scalars(select(Meter).order_by(Meter.event_name))).all()
    rows = await session.execute(
        select(Price, Meter)
        .join(Meter, Price.meter_id == Meter.id)
        .where(or_(Price.tenant_id.is_(None), Price.tenant_id == tenant_id))
        .order_by(Price.effective_from, Price.id)
    )
    prices: dict[int, list[PriceRule]] = {}
    for price, meter in rows.tuples():
        prices.setdefault(meter.id, []).append(to_price_rule(price, meter))
    return [
        MeterPricing(
            meter_id=meter.id,
            info=MeterInfo(
                event_name=meter.event_name,
                name=meter.name,
                unit=meter.unit,
                aggregation=meter.aggregation,
                currency=meter.currency,
            ),
            prices=tuple(prices.get(meter.id, ())),
        )
        for meter in meters
    ]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Usage of one meter over the period, per segment and per combination of `group_keys`."""

    meter_id: int
    aggregation: str
    group_keys: tuple[str, ...]
    # Where the segments start: the period start, then every price boundary inside the period.
    segment_starts: Sequence[datetime]


@dataclass(frozen=True, slots=True)
class UsageRow:
    segment: int  # 0-based index into the query's segment_starts
    group: tuple[str | None, ...]  # values of the query's group_keys ('' stored = None)
    sum: Decimal
    count: int
    last_value: Decimal | None
    last_ts: datetime | None


# Attribution fields the coarse `model_rollups` keep (besides the meter's dimensions).
MODEL_ROLLUP_FIELDS = frozenset({"model"})


def _rollup_table(group_keys: Sequence[str]) -> str:
    """`model_rollups` when the grouping needs no attribution but the model: the same buckets
    folded over orgs, projects, keys and users, so a month is far fewer rows to read."""
    attribution = {key for key in group_keys if key in ATTRIBUTION_FIELDS}
    return "model_rollups" if attribution <= MODEL_ROLLUP_FIELDS else "rollups"


def _group_expression(key: str, param: str) -> tuple[str, str, str | None]:
    """SQL to group by for one key, SQL for its value, and the bound dimension name it needs
    (None for an attribution column)."""
    if key in ATTRIBUTION_FIELDS:
        # Grouped by the bare column, whose statistics let the planner pick a hash aggregate;
        # rollups store an absent attribution as '' so the key can be a plain primary key.
        return key, f"NULLIF({key}, '')", None
    expression = f"(dimensions ->> CAST(:{param} AS text))"
    return expression, expression, key


async def read_usage(
    session: AsyncSession,
    tenant_id: str,
    queries: Sequence[UsageQuery],
    start: datetime,
    end: datetime,
) -> list[list[UsageRow]]:
    """Aggregate the tenant's rollups in `[start, end)` for each query, in one round trip.

    Buckets are 15-minute aligned and so are price boundaries, so every bucket lies wholly in
    one segment; `width_bucket` over the segment starts says which. The last value of a group
    is that of its greatest `(last_ts, last_event_id)`, as in the rollups themselves.
    """
    if not queries:
        return []
    branches: list[str] = []
    params: dict[str, Any] = {"tenant_id": tenant_id, "start": start, "end": end}
    binds: list[BindParameter[Any]] = [
        bindparam("tenant_id"),
        bindparam("start"),
        bindparam("end"),
    ]
    for index, query in enumerate(queries):
        grouped: list[str] = []
        values: list[str] = []
        for position, key in enumerate(query.group_keys):
            param = f"d{index}_{position}"
            group_expression, value, dimension = _group_expression(key, param)
            grouped.append(group_expression)
            values.append(value)
            if dimension is not None:
                params[param] = dimension
        group_by = ", ".join(["segment", *grouped])
        group = f"ARRAY[{', '.join(values)}]::text[]" if values else "ARRAY[]::text[]"
        if query.aggregation == "last":
            last = (
                "(array_agg(last_value ORDER BY last_ts DESC, last_event_id DESC))[1], max(last_ts)"
            )
        else:
            last = "NULL::numeric, NULL::timestamptz"
        params[f"m{index}"] = query.meter_id
        if len(query.segment_starts) > 1:
            segment = f"width_bucket(bucket_start, :s{index})"
            params[f"s{index}"] = list(query.segment_starts)
            binds.append(bindparam(f"s{index}", type_=ARRAY(TIMESTAMP(timezone=True))))
        else:
            segment = "1"  # no price boundary inside the period: one segment
        branches.append(
            f"SELECT {index} AS query, segment, {group} AS grp, sum(sum) AS sum, "
            f"sum(count)::bigint AS count, {last}\n"
            f"FROM (SELECT *, {segment} AS segment\n"
            f"      FROM {_rollup_table(query.group_keys)}\n"
            f"      WHERE tenant_id = :tenant_id AND meter_id = :m{index}\n"
            f"        AND bucket_start >= :start AND bucket_start < :end) AS r{index}\n"
            f"GROUP BY {group_by}"
        )
    statement = text("\nUNION ALL\n".join(branches)).bindparams(*binds)
    # A month of rollups makes the plan look expensive enough for JIT compilation, which then
    # costs more (100+ ms) than the aggregation it speeds up; this transaction does without.
    await session.execute(text("SET LOCAL jit = off"))
    results: list[list[UsageRow]] = [[] for _ in queries]
    for row in await session.execute(statement, params):
        results[row[0]].append(
            UsageRow(
                segment=row[1] - 1,
                group=tuple(row[2]),
                sum=row[3],
                count=row[4],
                last_value=row[5],
                last_ts=row[6],
            )
        )
    return results


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
