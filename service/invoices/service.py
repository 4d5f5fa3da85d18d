"""Invoice rules: drafts, finalization, late-usage adjustments, listing and voiding.

Services never commit: the request's session does.

A period is a calendar month in the tenant's time zone. Its usage is read from rollups, split
at the meters' price boundaries, grouped by the attribute keys the prices match on, and rated
by the pure functions of `rating`. One invoice per currency (a tenant's meters may bill in
several).

Finalizing stores each invoice as an immutable snapshot: its lines (prices and quantities
used), totals, and the exact JSON document served from then on. Finalizing and voiding take a
transaction-scoped advisory lock per tenant, so the one-invoice-per-period check and the
invoice counter cannot race; the counter is incremented in the same transaction, so a failed
attempt gives its number back and numbers stay gapless.

Late usage: an event accepted after its period Q was finalized is billed on the tenant's next
finalized invoice as an adjustment line naming Q. At finalization of P, every earlier period Q
with a live (finalized, not void) invoice is re-rated and compared with what the live invoices
already billed for Q (Q's own lines plus adjustment lines for Q); the differences become lines
of P's invoice in the same currency. Q stops being re-rated once a live invoice of a later
period was finalized after Q's late-arrival window closed (Q's end + late_arrival_days;
ingestion refuses older events) and after the last void that took back lines billing Q: that
finalization already billed everything Q can still receive (`periods_to_adjust`). Unlike a
plain "Q ended within the window" rule, this loses nothing when a finalization runs late.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.charges.rating import charge_line, commitment_line
from service.charges.repository import ChargeRepository, CommitmentRepository
from service.charges.service import charge_rule, commitment_rule
from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.money import render_amount, render_quantity, round_money, to_plain_string
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.db.connections import session_driver
from service.invoices.errors import (
    AmbiguousPrices,
    InvoiceAlreadyVoid,
    InvoiceExists,
    PeriodAdjustedLater,
    PeriodNotEnded,
    PeriodOverlaps,
)
from service.invoices.models import Invoice
from service.invoices.period_usage import group_usage, period_query
from service.invoices.rating import (
    InvoiceLine,
    adjustment_lines,
    invoice_totals,
    rate_meter,
)
from service.invoices.repository import (
    InvoiceRepository,
    InvoiceSummary,
    MeterPricing,
    load_pricing,
)
from service.invoices.schemas import InvoiceLineOut, InvoiceOut, InvoiceStatus, TierLineOut
from service.meters.models import EARLIEST_INSTANT, LATEST_INSTANT
from service.meters.pricing import AmbiguousPriceError, TierShare
from service.rollups.query import read_cells
from service.settings import Settings
from service.tenants.models import Tenant
from service.tenants.repository import TenantRepository
from service.webhooks.outbox import enqueue

PERIOD_PATTERN = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def parse_period(period: str) -> tuple[int, int]:
    if not PERIOD_PATTERN.match(period):
        raise InvalidInput(
            f"period must be a calendar month as YYYY-MM (e.g. '2026-10'), got '{period}'",
            errors=[FieldError(field="period", message="expected YYYY-MM")],
        )
    return int(period[:4]), int(period[5:])


def invoice_period(period: str, timezone: str) -> tuple[datetime, datetime]:
    """`[start, end)` of a calendar month in `timezone`, as UTC instants: local midnight of the
    first day to local midnight of the first day of the next month.

    The one check of a requested period, for preview and finalize alike: 422 naming `period`
    unless it is YYYY-MM and both instants lie between 2000-01-01T00:00:00Z and
    9000-01-01T00:00:00Z (the range every stored billing instant is in)."""
    year, month = parse_period(period)
    out_of_range = InvalidInput(
        f"period '{period}' in {timezone} must lie between {EARLIEST_INSTANT.isoformat()} "
        f"and {LATEST_INSTANT.isoformat()}",
        errors=[FieldError(field="period", message="out of range")],
    )
    # The years first: near year 1 or 9999 the conversion to UTC could overflow.
    if not EARLIEST_INSTANT.year <= year < LATEST_INSTANT.year:
        raise out_of_range
    zone = ZoneInfo(timezone)
    following = (year + 1, 1) if month == 12 else (year, month + 1)
    start = datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
    end = datetime(*following, 1, tzinfo=zone).astimezone(UTC)
    if not (start >= EARLIEST_INSTANT and end <= LATEST_INSTANT):
        raise out_of_range
    return start, end


def _neighbour(period: str, step: int) -> str:
    year, month = parse_period(period)
    index = year * 12 + month - 1 + step
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def invoice_bounds(
    period: str, timezone: str, invoices: Sequence[InvoiceSummary]
) -> tuple[datetime, datetime]:
    """The instants an invoice of `period` covers, given the tenant's stored invoices.

    A finalized invoice fixes its instants. A period that has one keeps them; otherwise it is
    the month in today's `timezone`, except that it starts where a finalized invoice of the
    previous month ends and ends where one of the next month starts, whatever zone those were
    finalized in. So a time zone change can neither bill usage twice nor leave a gap. Voided
    invoices fix nothing. Instants that would still overlap a finalized invoice are a 409.
    """
    start, end = invoice_period(period, timezone)
    live = [invoice for invoice in invoices if invoice.status == "finalized"]
    for invoice in live:
        if invoice.period == period:
            return invoice.period_start, invoice.period_end
        if invoice.period == _neighbour(period, -1):
            start = invoice.period_end
        elif invoice.period == _neighbour(period, 1):
            end = invoice.period_start
    clashes = sorted(
        {
            invoice.period
            for invoice in live
            if invoice.period_start < end and start < invoice.period_end
        }
        | ({_neighbour(period, -1), _neighbour(period, 1)} if start >= end else set())
    )
    if clashes:
        raise PeriodOverlaps(
            f"period {period} would cover [{start.isoformat()}, {end.isoformat()}), which "
            f"overlaps the finalized invoices of {', '.join(clashes)}; void those first",
            errors=[FieldError(field="period", message="overlaps a finalized invoice")],
        )
    return start, end


def invoice_number(tenant_id: str, counter: int) -> str:
    """`ACME-000012`: the whole tenant id in upper case, '-', then the tenant's counter.

    Unique across tenants: ids are lowercase slugs, so upper-casing keeps them distinct, and
    the counter is all digits, so the last '-' always separates the id from the counter."""
    return f"{tenant_id.upper()}-{counter:06d}"


def encode_document(invoice: InvoiceOut) -> str:
    return msgspec.json.encode(invoice).decode()


def decode_document(document: str | bytes) -> InvoiceOut:
    return msgspec.json.decode(document, type=InvoiceOut)


def _optional_quantity(value: Decimal | None) -> str | None:
    return None if value is None else render_quantity(value)


def line_out(line: InvoiceLine, currency: str) -> InvoiceLineOut:
    return InvoiceLineOut(
        kind=line.kind,
        meter=line.meter,
        description=line.description,
        match=dict(line.match),
        period_start=line.period_start,
        period_end=line.period_end,
        quantity=render_quantity(line.quantity),
        unit_amount=render_amount(line.unit_amount, currency),
        per_units=render_quantity(line.per_units),
        amount=to_plain_string(round_money(line.amount, currency)),
        tier=line.tier,
        unpriced=line.unpriced,
        adjusts_period=line.adjusts_period,
        price_id=line.price_id,
        adjusts_kind=line.adjusts_kind,
        tiers=[
            TierLineOut(
                tier=share.tier,
                up_to=_optional_quantity(share.up_to),
                quantity=render_quantity(share.quantity),
                unit_amount=render_amount(share.unit_amount, currency),
                flat_amount=render_amount(share.flat_amount, currency),
                amount=render_amount(share.amount, currency),
            )
            for share in line.tiers
        ],
        free_units_applied=_optional_quantity(line.free_units_applied),
        packages=_optional_quantity(line.packages),
        minimum_amount=None
        if line.minimum_amount is None
        else render_amount(line.minimum_amount, currency),
        charge_id=line.charge_id,
        commitment_id=line.commitment_id,
        proration=_optional_quantity(line.proration),
    )


def _optional_decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def line_from_snapshot(line: Mapping[str, Any]) -> InvoiceLine:
    """A stored line (as in the document) back into a rating line, for adjustments. Lines
    stored before a field existed take its default (`kind` usage, no tiers listed)."""
    snapshot = msgspec.convert(line, type=InvoiceLineOut)
    return InvoiceLine(
        kind=snapshot.kind,
        meter=snapshot.meter,
        description=snapshot.description,
        match=snapshot.match,
        price_id=snapshot.price_id,
        period_start=snapshot.period_start,
        period_end=snapshot.period_end,
        quantity=Decimal(snapshot.quantity),
        unit_amount=Decimal(snapshot.unit_amount),
        per_units=Decimal(snapshot.per_units),
        amount=Decimal(snapshot.amount),
        tier=snapshot.tier,
        unpriced=snapshot.unpriced,
        adjusts_period=snapshot.adjusts_period,
        adjusts_kind=snapshot.adjusts_kind,
        tiers=tuple(
            TierShare(
                tier=share.tier,
                up_to=_optional_decimal(share.up_to),
                quantity=Decimal(share.quantity),
                unit_amount=Decimal(share.unit_amount),
                flat_amount=Decimal(share.flat_amount),
                amount=Decimal(share.amount),
            )
            for share in snapshot.tiers
        ),
        free_units_applied=_optional_decimal(snapshot.free_units_applied),
        packages=_optional_decimal(snapshot.packages),
        minimum_amount=_optional_decimal(snapshot.minimum_amount),
        charge_id=snapshot.charge_id,
        commitment_id=snapshot.commitment_id,
        proration=_optional_decimal(snapshot.proration),
    )


def build_document(
    *,
    tenant_id: str,
    period: str,
    start: datetime,
    end: datetime,
    currency: str,
    lines: Sequence[InvoiceLine],
    status: InvoiceStatus = "draft",
    invoice_id: uuid.UUID | None = None,
    number: str | None = None,
    finalized_at: datetime | None = None,
) -> InvoiceOut:
    subtotal, total = invoice_totals(lines, currency)
    return InvoiceOut(
        id=None if invoice_id is None else str(invoice_id),
        number=number,
        tenant_id=tenant_id,
        status=status,
        period=period,
        period_start=start,
        period_end=end,
        currency=currency,
        lines=[line_out(line, currency) for line in lines],
        subtotal=to_plain_string(subtotal),
        total=to_plain_string(total),
        finalized_at=finalized_at,
        voided_at=None,
    )


def periods_to_adjust(
    invoices: Sequence[InvoiceSummary], *, before: str, late_arrival: timedelta
) -> dict[str, tuple[datetime, datetime]]:
    """The finalized periods earlier than `before` whose billing may still change, with their
    bounds.

    A period Q with a live invoice is settled once a live invoice of a later period was
    finalized after Q's late-arrival window closed (no event of Q can be accepted after it)
    and after the last void that removed lines billing Q: that finalization compared Q's
    final usage with Q's final billing. Until then, each finalization re-rates Q.
    """
    live = [invoice for invoice in invoices if invoice.status == "finalized"]
    periods: dict[str, tuple[datetime, datetime]] = {}
    for invoice in sorted(live, key=lambda i: (i.period, i.finalized_at)):
        prior = invoice.period
        if prior >= before or prior in periods:
            continue
        touched = [
            voided.voided_at
            for voided in invoices
            if voided.voided_at is not None and (voided.period == prior or prior in voided.adjusts)
        ]
        settled_after = max([invoice.period_end + late_arrival, *touched])
        if not any(later.period > prior and later.finalized_at >= settled_after for later in live):
            periods[prior] = (invoice.period_start, invoice.period_end)
    return periods


@dataclass(frozen=True, slots=True)
class Draft:
    currency: str
    lines: list[InvoiceLine]


class InvoiceService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.invoices = InvoiceRepository(session)
        self.charges = ChargeRepository(session)
        self.commitments = CommitmentRepository(session)
        self.tenants = TenantRepository(session)
        self.session = session
        self.settings = settings

    async def _tenant(self, tenant_id: str, principal: Principal) -> Tenant:
        principal.ensure_tenant(tenant_id)
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist")
        return tenant

    # -- rating --------------------------------------------------------------------------

    async def rate_period(
        self,
        tenant_id: str,
        meters: Sequence[MeterPricing],
        start: datetime,
        end: datetime,
    ) -> dict[str, list[InvoiceLine]]:
        """Lines per currency for the tenant's usage in `[start, end)`, at today's price book
        (prices are effective-dated, so a past period keeps its prices), and its recurring
        charges effective in it, prorated (`charge_line`), and per currency the true-up of its
        commitments (`commitment_line`)."""
        queries = [period_query(tenant_id, meter, start, end) for meter in meters]
        usage = await read_cells(await session_driver(self.session), queries)
        lines: dict[str, list[InvoiceLine]] = {}
        for meter, query, cells in zip(meters, queries, usage, strict=True):
            if not cells:
                continue
            try:
                meter_lines = rate_meter(
                    meter.info,
                    group_usage(query, cells, unique_key=meter.info.unique_key),
                    meter.prices,
                    tenant_id=tenant_id,
                    period_start=start,
                    period_end=end,
                )
            except AmbiguousPriceError as exc:
                raise AmbiguousPrices(
                    f"meter '{meter.info.event_name}': {exc}",
                    errors=[FieldError(field="prices", message="ambiguous")],
                ) from exc
            if meter_lines:
                lines.setdefault(meter.info.currency, []).extend(meter_lines)
        for charge in await self.charges.effective_in(tenant_id, start, end):
            line = charge_line(charge_rule(charge), start, end)
            if line is not None:
                lines.setdefault(charge.currency, []).append(line)
        commitments = [
            commitment_rule(commitment)
            for commitment in await self.commitments.effective_in(tenant_id, start, end)
        ]
        for currency in sorted({commitment.currency for commitment in commitments}):
            true_up = commitment_line(
                commitments,
                lines.get(currency, []),
                currency=currency,
                period_start=start,
                period_end=end,
            )
            if true_up is not None:
                lines.setdefault(currency, []).append(true_up)
        return lines

    async def _adjustments(
        self, tenant_id: str, meters: Sequence[MeterPricing], period: str
    ) -> dict[str, list[InvoiceLine]]:
        """Prior-period adjustment lines, per currency, that an invoice for `period` carries."""
        open_periods = periods_to_adjust(
            await self.invoices.summaries(tenant_id),
            before=period,
            late_arrival=timedelta(days=self.settings.late_arrival_days),
        )
        if not open_periods:
            return {}
        stored = await self.invoices.live_lines_since(tenant_id, min(open_periods))
        # A meter made non-billable since is out of the comparison: what it billed stands,
        # and it gets neither credits nor late charges.
        billable = {meter.info.event_name for meter in meters}
        adjustments: dict[str, list[InvoiceLine]] = {}
        for prior in sorted(open_periods):
            current = await self.rate_period(tenant_id, meters, *open_periods[prior])
            billed: dict[str, list[InvoiceLine]] = {}
            for invoice_period, currency, lines in stored:
                for line in lines:
                    adjusts = line.get("adjusts_period")
                    # Charge lines have no meter and are always compared.
                    if line["meter"] is not None and line["meter"] not in billable:
                        continue
                    if (invoice_period == prior and adjusts is None) or adjusts == prior:
                        billed.setdefault(currency, []).append(line_from_snapshot(line))
            for currency in sorted(set(current) | set(billed)):
                found = adjustment_lines(
                    current.get(currency, []), billed.get(currency, []), period_label=prior
                )
                if found:
                    adjustments.setdefault(currency, []).extend(found)
        return adjustments

    async def _drafts(
        self, tenant: Tenant, period: str, start: datetime, end: datetime
    ) -> list[Draft]:
        """What finalizing the period now would bill: one draft per currency with lines, or a
        single empty one in the tenant's currency when there is nothing to bill."""
        meters = await load_pricing(self.session, tenant.id)
        regular = await self.rate_period(tenant.id, meters, start, end)
        adjustments = await self._adjustments(tenant.id, meters, period)
        drafts = [
            Draft(currency, [*regular.get(currency, []), *adjustments.get(currency, [])])
            for currency in sorted(set(regular) | set(adjustments))
        ]
        return drafts or [Draft(tenant.currency, [])]

    # -- API -----------------------------------------------------------------------------

    async def preview(self, tenant_id: str, period: str, principal: Principal) -> list[InvoiceOut]:
        tenant = await self._tenant(tenant_id, principal)
        invoice_period(period, tenant.timezone)  # a 422 before reading anything else
        start, end = invoice_bounds(
            period, tenant.timezone, await self.invoices.summaries(tenant.id)
        )
        return [
            build_document(
                tenant_id=tenant.id,
                period=period,
                start=start,
                end=end,
                currency=draft.currency,
                lines=draft.lines,
            )
            for draft in await self._drafts(tenant, period, start, end)
        ]

    async def finalize(self, tenant_id: str, period: str, principal: Principal) -> list[InvoiceOut]:
        tenant = await self._tenant(tenant_id, principal)
        invoice_period(period, tenant.timezone)  # the same 422s as preview, before any write
        await self.invoices.lock_tenant(tenant.id)
        existing = await self.invoices.live_numbers_for_period(tenant.id, period)
        if existing:
            raise InvoiceExists(
                f"period {period} of tenant '{tenant.id}' is already finalized "
                f"(invoice {', '.join(existing)}); void it to finalize the period again"
            )
        # Read under the lock: the neighbouring invoices that fix this period's instants
        # cannot change until the transaction ends.
        start, end = invoice_bounds(
            period, tenant.timezone, await self.invoices.summaries(tenant.id)
        )
        now = datetime.now(UTC)
        if end > now:
            raise PeriodNotEnded(
                f"period {period} ends at {end.isoformat()} ({tenant.timezone}); it can be "
                "finalized once it has ended (preview it meanwhile)",
                errors=[FieldError(field="period", message="not ended")],
            )
        adjusting = await self.invoices.live_numbers_adjusting(tenant.id, period)
        if adjusting:
            raise PeriodAdjustedLater(
                f"invoice {', '.join(adjusting)} already bills late usage of {period} as "
                f"adjustments; void it first, then finalize {period} and the later period again"
            )
        documents: list[InvoiceOut] = []
        for draft in await self._drafts(tenant, period, start, end):
            invoice_id = uuid.uuid4()
            document = build_document(
                tenant_id=tenant.id,
                period=period,
                start=start,
                end=end,
                currency=draft.currency,
                lines=draft.lines,
                status="finalized",
                invoice_id=invoice_id,
                number=invoice_number(tenant.id, await self.invoices.next_number(tenant.id)),
                finalized_at=now,
            )
            try:
                await self.invoices.add(
                    Invoice(
                        tenant_id=tenant.id,
                        id=invoice_id,
                        number=document.number,
                        status="finalized",
                        period=period,
                        period_start=start,
                        period_end=end,
                        currency=draft.currency,
                        subtotal=Decimal(document.subtotal),
                        total=Decimal(document.total),
                        lines=msgspec.to_builtins(document.lines),
                        document=encode_document(document),
                        finalized_at=now,
                        voided_at=None,
                    )
                )
            except IntegrityError as exc:
                # Only reachable without the advisory lock (e.g. a manual insert); the request's
                # transaction rolls back, counter increment included.
                raise InvoiceExists(
                    f"period {period} of tenant '{tenant.id}' was finalized concurrently"
                ) from exc
            documents.append(document)
        # In this transaction: the webhooks exist exactly when the invoices do.
        driver = await session_driver(self.session)
        for document in documents:
            await enqueue(driver, tenant.id, "invoice.finalized", document)
        return documents

    async def document(self, invoice_id: uuid.UUID, principal: Principal) -> str:
        """The stored JSON document, exactly as frozen."""
        invoice = await self.invoices.get(invoice_id)
        if invoice is None:
            raise NotFound(f"invoice '{invoice_id}' does not exist")
        principal.ensure_tenant(invoice.tenant_id)
        return invoice.document

    async def list(
        self,
        cursor: str | None,
        limit: int,
        *,
        tenant_id: str | None,
        status: str | None,
        period: str | None,
        principal: Principal,
    ) -> Page[InvoiceOut]:
        if tenant_id is not None:
            principal.ensure_tenant(tenant_id)
        else:
            tenant_id = principal.tenant_id
        if period is not None:
            parse_period(period)
        after = None
        if cursor:
            finalized, invoice_id = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(finalized), uuid.UUID(invoice_id))
            except (TypeError, ValueError) as exc:
                raise InvalidInput("cursor is not one this API returned") from exc
        rows = await self.invoices.list_after(
            after, limit + 1, tenant_id=tenant_id, status=status, period=period
        )
        items = [decode_document(row.document) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor([last.finalized_at.isoformat(), str(last.id)])
        return Page(items=items, next_cursor=next_cursor)

    async def void(self, invoice_id: uuid.UUID, principal: Principal) -> InvoiceOut:
        """Void a finalized invoice: its document says so from now on, its usage counts as not
        billed, and its period may be finalized again under a new number."""
        found = await self.invoices.get(invoice_id)
        if found is None:
            raise NotFound(f"invoice '{invoice_id}' does not exist")
        principal.ensure_tenant(found.tenant_id)
        await self.invoices.lock_tenant(found.tenant_id)
        invoice = await self.invoices.get(invoice_id, for_update=True)
        assert invoice is not None  # invoices are never deleted
        if invoice.status == "void":
            raise InvoiceAlreadyVoid(f"invoice {invoice.number} is already void")
        voided_at = datetime.now(UTC)
        document = msgspec.structs.replace(
            decode_document(invoice.document), status="void", voided_at=voided_at
        )
        await self.invoices.mark_void(invoice, voided_at, encode_document(document))
        await enqueue(
            await session_driver(self.session), invoice.tenant_id, "invoice.voided", document
        )
        return document
