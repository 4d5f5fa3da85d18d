"""Meter and price rules. Services never commit: the request's session does.

Changes to a meter's prices run under a row lock on the meter (`SELECT ... FOR UPDATE`), so two
concurrent requests cannot both pass the overlap check and store competing prices.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Principal
from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.money import (
    currency_exponent,
    decimal_places,
    is_currency,
    render_amount,
    render_quantity,
    to_plain_string,
)
from service.common.progress import NO_PROGRESS, Progress
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.common.time import (
    QUARTER_HOUR,
    ceil_to_quarter_hour,
    floor_to_quarter_hour,
    is_on_quarter_hour,
)
from service.meters.catalog_types import CatalogPrices
from service.meters.errors import (
    CatalogMetersMissing,
    DimensionRemoval,
    MeterExists,
    MeterHasEvents,
    PresetConflict,
    PriceCycle,
    PriceOverlap,
)
from service.meters.models import EARLIEST_INSTANT, LATEST_INSTANT, Meter, Price
from service.meters.presets import DEFAULT_CURRENCY, LLM_DIMENSIONS, LLM_PRESET, PresetMeter
from service.meters.pricing import (
    PriceFieldError,
    PriceRule,
    RelativeTo,
    Tier,
    prices_conflict,
    prices_overlap,
    reference_cycle,
    tiers_from_json,
    to_price_rule,
    validate_tiers,
)
from service.meters.repository import MeterRepository, PriceRepository
from service.meters.schemas import (
    ImportConflict,
    LlmPresetOut,
    LlmPriceImport,
    LlmPriceImportOut,
    MeterCreate,
    MeterOut,
    MeterUpdate,
    OtelMapping,
    PriceCreate,
    PriceEnd,
    PriceOut,
    RelativeToIn,
    RelativeToOut,
    TierIn,
    TierOut,
)
from service.rollups.models import ATTRIBUTION_FIELDS
from service.tenants.repository import TenantRepository

# Keys every event carries at the top level; a meter may not declare them as its own.
RESERVED_DIMENSIONS = frozenset((*ATTRIBUTION_FIELDS, "tenant_id"))
MAX_DECIMAL_PLACES = 12
# prices.unit_amount and per_units are NUMERIC(32, 12): at most 20 digits before the point.
_DECIMAL_CEILING = Decimal(10) ** 20


def _invalid(field: str, message: str, detail: str | None = None) -> InvalidInput:
    return InvalidInput(
        detail or f"{field}: {message}", errors=[FieldError(field=field, message=message)]
    )


def _validate_currency(code: str) -> None:
    if not is_currency(code):
        raise _invalid(
            "currency",
            "unknown ISO 4217 currency",
            f"'{code}' is not an ISO 4217 currency code (e.g. 'USD', 'EUR', 'JPY')",
        )


def _validate_dimensions(dimensions: Sequence[str]) -> None:
    reserved = sorted(set(dimensions) & RESERVED_DIMENSIONS)
    if reserved:
        raise _invalid(
            "dimensions",
            "built-in attribution field",
            f"{', '.join(reserved)} cannot be declared: every event already carries "
            f"{', '.join(sorted(RESERVED_DIMENSIONS))} as built-in fields, which usage can "
            "be grouped and prices matched by without declaring them",
        )
    duplicates = sorted({key for key in dimensions if dimensions.count(key) > 1})
    if duplicates:
        raise _invalid(
            "dimensions", "duplicate key", f"dimensions lists {', '.join(duplicates)} twice"
        )


# Decimals ---------------------------------------------------------------------------------


def exact_decimal(value: Decimal, field: str, *, positive: bool = False) -> Decimal:
    """Check an exact amount or quantity from a request: finite, >= 0 (> 0 when `positive`),
    at most 12 decimal places and 20 integer digits."""
    if not value.is_finite():
        raise _invalid(field, "not a finite number", f"{field} must be a finite number")
    if positive and value <= 0:
        raise _invalid(field, "must be > 0", f"{field} must be greater than 0, got {value}")
    if value < 0:
        raise _invalid(field, "must be >= 0", f"{field} must not be negative, got {value}")
    if decimal_places(value) > MAX_DECIMAL_PLACES:
        raise _invalid(
            field,
            f"more than {MAX_DECIMAL_PLACES} decimal places",
            f"{field} ({value}) has more than {MAX_DECIMAL_PLACES} decimal places; for very "
            "small unit prices, price per more units instead (per_units, e.g. 1000000)",
        )
    if value >= _DECIMAL_CEILING:
        raise _invalid(field, "too large", f"{field} must be less than 10^20, got {value}")
    return value


# Price instants ---------------------------------------------------------------------------


# Prices start and end on rollup bucket boundaries (the quarter-hour grid), so a price change
# never falls inside a bucket and invoice lines split exactly there.


def next_price_boundary(now: datetime) -> datetime:
    """`now` rounded up to the next 15-minute UTC boundary (unchanged when already on one)."""
    return ceil_to_quarter_hour(now)


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def price_instant(value: datetime, field: str) -> datetime:
    """An effective_from/effective_to from a request, in UTC; 422 unless it has an offset,
    lies in the range the service bills (2000-01-01T00:00:00Z to 9000-01-01T00:00:00Z) and on a
    15-minute boundary."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise _invalid(
            field,
            "missing time zone offset",
            f"{field} must carry a UTC offset, e.g. '2026-11-01T00:00:00Z'",
        )
    # Compared before converting: near year 1 or 9999 the conversion to UTC could overflow.
    if not EARLIEST_INSTANT <= value <= LATEST_INSTANT:
        raise _invalid(
            field,
            "out of range",
            f"{field} ({value.isoformat()}) must lie between {_rfc3339(EARLIEST_INSTANT)} and "
            f"{_rfc3339(LATEST_INSTANT)}",
        )
    utc = value.astimezone(UTC)
    if not is_on_quarter_hour(utc):
        floor = floor_to_quarter_hour(utc)
        raise _invalid(
            field,
            "not on a 15-minute boundary",
            f"{field} ({value.isoformat()}) must be on a 15-minute UTC boundary (minutes "
            "00, 15, 30 or 45, zero seconds): usage is stored in 15-minute buckets, and "
            f"invoices split at price changes; use {_rfc3339(floor)} or "
            f"{_rfc3339(floor + QUARTER_HOUR)}",
        )
    return utc


# Rows to answers and to pricing rules -----------------------------------------------------


def meter_out(meter: Meter) -> MeterOut:
    return MeterOut(
        event_name=meter.event_name,
        name=meter.name,
        description=meter.description,
        unit=meter.unit,
        aggregation=meter.aggregation,
        dimensions=list(meter.dimensions),
        currency=meter.currency,
        billable=meter.billable,
        metadata=dict(meter.metadata_),
        status=meter.status,
        has_events=meter.has_events,
        created_at=meter.created_at,
        updated_at=meter.updated_at,
        otel=None if meter.otel is None else msgspec.convert(meter.otel, OtelMapping),
        unique_key=meter.unique_key,
        allow_negative=meter.allow_negative,
    )


def _otel_json(mapping: OtelMapping | None) -> dict[str, Any] | None:
    return None if mapping is None else msgspec.structs.asdict(mapping)


def _tiers_to_json(tiers: Sequence[Tier]) -> list[dict[str, Any]]:
    """Tiers as stored in prices.tiers (JSONB): decimals as strings, so they stay exact; a
    flat amount only when there is one (absent means 0, as for tiers stored before)."""
    stored: list[dict[str, Any]] = []
    for tier in tiers:
        entry = {
            "up_to": None if tier.up_to is None else render_quantity(tier.up_to),
            "unit_amount": to_plain_string(tier.unit_amount),
        }
        if tier.flat_amount:
            entry["flat_amount"] = to_plain_string(tier.flat_amount)
        stored.append(entry)
    return stored


def price_out(price: Price, meter: Meter) -> PriceOut:
    currency = meter.currency
    assert currency is not None  # prices exist only on meters with a currency
    return PriceOut(
        id=price.id,
        meter=meter.event_name,
        currency=currency,
        unit_amount=None
        if price.unit_amount is None
        else render_amount(price.unit_amount, currency),
        per_units=None if price.per_units is None else render_quantity(price.per_units),
        relative_to=None
        if price.relative_to_meter is None or price.relative_factor is None
        else RelativeToOut(
            meter=price.relative_to_meter, factor=render_quantity(price.relative_factor)
        ),
        match=dict(price.match),
        tenant_id=price.tenant_id,
        tiers=[
            TierOut(
                up_to=None if tier.up_to is None else render_quantity(tier.up_to),
                unit_amount=render_amount(tier.unit_amount, currency),
                flat_amount=render_amount(tier.flat_amount, currency),
            )
            for tier in tiers_from_json(price.tiers)
        ],
        tier_mode=price.tier_mode,
        free_units=render_quantity(price.free_units),
        package_size=None if price.package_size is None else render_quantity(price.package_size),
        minimum_amount=None
        if price.minimum_amount is None
        else render_amount(price.minimum_amount, currency),
        effective_from=price.effective_from,
        effective_to=price.effective_to,
        created_at=price.created_at,
    )


# Meters -----------------------------------------------------------------------------------


def _require_currency_if_billable(billable: bool, currency: str | None) -> None:
    if billable and currency is None:
        raise _invalid(
            "currency",
            "required for a billable meter",
            "currency (ISO 4217, e.g. 'USD') is required for a billable meter: its prices are "
            "in it; a meter that is never billed (billable: false) may leave it out",
        )


def _validate_aggregation_options(
    aggregation: str, unique_key: str | None, allow_negative: bool, dimensions: Sequence[str]
) -> None:
    """unique_key belongs to unique_count meters (and they need one: an attribution field or
    one of their dimensions); allow_negative to sum meters."""
    if aggregation == "unique_count":
        allowed = [*ATTRIBUTION_FIELDS, *dimensions]
        if unique_key is None:
            raise _invalid(
                "unique_key",
                "required for a unique_count meter",
                "unique_key is required for a unique_count meter: the field whose distinct "
                f"values it counts, one of {', '.join(allowed)}",
            )
        if unique_key not in allowed:
            raise _invalid(
                "unique_key",
                "not an attribution field or declared dimension",
                f"unique_key '{unique_key}' is neither an attribution field nor a dimension of "
                f"the meter; one of {', '.join(allowed)}",
            )
    elif unique_key is not None:
        raise _invalid(
            "unique_key",
            "only for unique_count meters",
            f"unique_key is only for unique_count meters; this meter aggregates by {aggregation}",
        )
    if allow_negative and aggregation != "sum":
        raise _invalid(
            "allow_negative",
            "only for sum meters",
            f"allow_negative is only for sum meters (refunds and credits lower a sum); this "
            f"meter aggregates by {aggregation}",
        )


class MeterService:
    def __init__(self, session: AsyncSession) -> None:
        self.meters = MeterRepository(session)
        self.prices = PriceRepository(session)

    async def create(self, data: MeterCreate) -> MeterOut:
        if data.currency is not None:
            _validate_currency(data.currency)
        _require_currency_if_billable(data.billable, data.currency)
        _validate_dimensions(data.dimensions)
        _validate_aggregation_options(
            data.aggregation, data.unique_key, data.allow_negative, data.dimensions
        )
        meter = await self.meters.add(
            {
                "event_name": data.event_name,
                "name": data.name,
                "description": data.description,
                "unit": data.unit,
                "aggregation": data.aggregation,
                "dimensions": data.dimensions,
                "currency": data.currency,
                "billable": data.billable,
                "metadata_": data.metadata,
                "otel": _otel_json(data.otel),
                "unique_key": data.unique_key,
                "allow_negative": data.allow_negative,
            }
        )
        if meter is None:
            raise MeterExists(f"a meter with event_name '{data.event_name}' already exists")
        return meter_out(meter)

    async def require(self, event_name: str, *, for_update: bool = False) -> Meter:
        meter = await self.meters.get(event_name, for_update=for_update)
        if meter is None:
            raise NotFound(f"meter '{event_name}' does not exist")
        return meter

    async def get(self, event_name: str) -> MeterOut:
        return meter_out(await self.require(event_name))

    async def list(self, cursor: str | None, limit: int, status: str | None) -> Page[MeterOut]:
        after = decode_cursor(cursor, 1)[0] if cursor else None
        if after is not None and not isinstance(after, str):
            raise InvalidInput("cursor is not one this API returned")
        rows = await self.meters.list_after(after, limit + 1, status)
        items = [meter_out(m) for m in rows[:limit]]
        next_cursor = encode_cursor([items[-1].event_name]) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def update(self, event_name: str, data: MeterUpdate) -> MeterOut:
        if data.currency is not msgspec.UNSET:
            # Relative prices link meters of one currency; before the meter lock.
            await self.prices.lock_price_references()
        # Locked, so ingestion cannot mark the meter as having events between check and write.
        meter = await self.require(event_name, for_update=True)
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if changes.get("currency") is not None:
            _validate_currency(changes["currency"])
        _require_currency_if_billable(
            changes.get("billable", meter.billable), changes.get("currency", meter.currency)
        )
        if "currency" in changes and changes["currency"] != meter.currency:
            await self._refuse_currency_change(meter, changes["currency"])
        if "dimensions" in changes:
            wanted: list[str] = changes["dimensions"]
            _validate_dimensions(wanted)
            removed = [key for key in meter.dimensions if key not in wanted]
            if removed:
                raise DimensionRemoval(
                    f"dimensions {', '.join(removed)} of meter '{event_name}' cannot be removed: "
                    "stored events and rollups carry them; send the full list with keys added "
                    f"only (currently {', '.join(meter.dimensions)})"
                )
            changes["dimensions"] = [
                *meter.dimensions,
                *(key for key in wanted if key not in meter.dimensions),
            ]
        _validate_aggregation_options(
            changes.get("aggregation", meter.aggregation),
            changes.get("unique_key", meter.unique_key),
            changes.get("allow_negative", meter.allow_negative),
            changes.get("dimensions", meter.dimensions),
        )
        frozen = [
            key
            for key in ("aggregation", "currency", "unique_key")
            if key in changes and changes[key] != getattr(meter, key)
        ]
        if frozen and meter.has_events:
            raise MeterHasEvents(
                f"meter '{event_name}' already has events, so its {' and '.join(frozen)} can no "
                "longer change (stored usage would be re-read differently); create a new meter "
                "with another event_name instead"
            )
        if "metadata" in changes:
            changes["metadata_"] = changes.pop("metadata")
        if "otel" in changes:
            changes["otel"] = _otel_json(data.otel if isinstance(data.otel, OtelMapping) else None)
        if changes:
            meter = await self.meters.update(meter, changes)
        return meter_out(meter)

    async def _refuse_currency_change(self, meter: Meter, currency: str | None) -> None:
        """A meter's prices are in its currency: dropping the currency of a priced meter would
        leave them in none."""
        if currency is None and await self.prices.exists_for_meter(meter.id):
            raise _invalid(
                "currency",
                "meter has prices",
                f"meter '{meter.event_name}' has prices in {meter.currency}, so it needs a "
                "currency; change it to another one rather than removing it",
            )
        linked = sorted(
            {
                *await self.prices.referring_meters(meter.event_name),
                *await self.prices.referred_meters(meter.id),
            }
        )
        if linked:
            raise _invalid(
                "currency",
                "linked by relative prices",
                f"meter '{meter.event_name}' is linked by relative prices to "
                f"{', '.join(linked)}, which bill in {meter.currency}; a relative price and "
                "the meter it refers to share one currency, so end those prices first",
            )

    async def apply_llm_preset(self, currency: str | None) -> LlmPresetOut:
        """Create the LLM preset's meters that are missing; answer all of them, in preset order.

        An existing meter of the same name is kept as it is, with the preset's dimensions it
        lacks added (dimensions only ever grow). One whose aggregation differs, or which bills
        in another currency than the one asked for, cannot serve as the preset's meter: 409
        `preset_conflict` naming each, and nothing is changed."""
        if currency is not None:
            _validate_currency(currency)
        existing: dict[str, Meter] = {}
        problems: list[str] = []
        for preset in LLM_PRESET:
            meter = await self.meters.get(preset.event_name, for_update=True)
            if meter is None:
                continue
            existing[preset.event_name] = meter
            if meter.aggregation != preset.aggregation:
                problems.append(
                    f"'{meter.event_name}' aggregates by {meter.aggregation}, the preset by "
                    f"{preset.aggregation}"
                )
            if currency is not None and preset.priced and meter.currency != currency:
                problems.append(
                    f"'{meter.event_name}' bills in {meter.currency or 'no currency'}, not "
                    f"{currency}"
                )
        if problems:
            raise PresetConflict(
                "existing meters cannot serve as the LLM preset's: "
                + "; ".join(problems)
                + ". Change or archive them and use other event names, or leave currency out "
                "to keep the existing meters' currencies"
            )
        answer = LlmPresetOut(meters=[])
        for preset in LLM_PRESET:
            meter = existing.get(preset.event_name) or await self._create_preset_meter(
                preset, currency or DEFAULT_CURRENCY
            )
            missing = [key for key in LLM_DIMENSIONS if key not in meter.dimensions]
            if missing:
                meter = await self.meters.update(
                    meter, {"dimensions": [*meter.dimensions, *missing]}
                )
            answer.meters.append(meter_out(meter))
        return answer

    async def _create_preset_meter(self, preset: PresetMeter, currency: str) -> Meter:
        meter = await self.meters.add(
            {
                "event_name": preset.event_name,
                "name": preset.name,
                "description": preset.description,
                "unit": preset.unit,
                "aggregation": preset.aggregation,
                "dimensions": list(LLM_DIMENSIONS),
                "currency": currency if preset.priced else None,
                "billable": preset.billable,
            }
        )
        if meter is None:  # created concurrently: use it if it fits, like any existing one
            raise PresetConflict(
                f"meter '{preset.event_name}' was created concurrently; apply the preset again"
            )
        return meter

    async def archive(self, event_name: str) -> MeterOut:
        """Stop new events for the meter; its history stays readable and billable. Idempotent."""
        meter = await self.require(event_name, for_update=True)
        if meter.status != "archived":
            meter = await self.meters.update(meter, {"status": "archived"})
        return meter_out(meter)


# Prices -----------------------------------------------------------------------------------


def _validate_match(match: Mapping[str, str], meter: Meter) -> None:
    allowed = set(ATTRIBUTION_FIELDS) | set(meter.dimensions)
    unknown = sorted(set(match) - allowed)
    if unknown:
        declared = ", ".join(meter.dimensions) or "none"
        raise _invalid(
            "match",
            f"unknown key {', '.join(unknown)}",
            f"match key(s) {', '.join(unknown)} are neither attribution fields "
            f"({', '.join(ATTRIBUTION_FIELDS)}) nor dimensions declared by meter "
            f"'{meter.event_name}' ({declared}); add the dimension to the meter first",
        )


def _checked_tiers(tiers: Sequence[TierIn]) -> tuple[Tier, ...]:
    checked = tuple(
        Tier(
            up_to=None
            if tier.up_to is None
            else exact_decimal(tier.up_to, f"tiers[{index}].up_to", positive=True),
            unit_amount=exact_decimal(tier.unit_amount, f"tiers[{index}].unit_amount"),
            flat_amount=Decimal(0)
            if tier.flat_amount is None
            else exact_decimal(tier.flat_amount, f"tiers[{index}].flat_amount"),
        )
        for index, tier in enumerate(tiers)
    )
    try:
        validate_tiers(checked)
    except PriceFieldError as exc:
        raise _invalid(exc.field, str(exc), f"tiers: {exc}") from exc
    return checked


def _check_price_rules(data: PriceCreate, currency: str, tiers: Sequence[Tier]) -> None:
    """422 for rules that cannot go together, each naming the field to change (the fields'
    own values are checked already)."""
    if data.relative_to is not None:
        for field, given in (
            ("tier_mode", data.tier_mode),
            ("free_units", data.free_units),
            ("package_size", data.package_size),
            ("minimum_amount", data.minimum_amount),
        ):
            if given is not None:
                raise _invalid(
                    field,
                    "not with relative_to",
                    f"{field} cannot be given with relative_to: a relative price only "
                    "multiplies the per-unit rate of the price it refers to",
                )
    if data.tier_mode == "volume" and not tiers:
        raise _invalid(
            "tier_mode",
            "volume needs tiers",
            "tier_mode 'volume' prices every unit at the rate of the tier the period's quantity "
            "reaches, so it needs tiers; give tiers or leave tier_mode out",
        )
    if data.package_size is not None:
        if tiers:
            raise _invalid(
                "package_size",
                "not with tiers",
                "package_size cannot be combined with tiers: a package price bills whole "
                "packages at unit_amount each; use one or the other",
            )
        if data.per_units is not None and data.per_units != 1:
            raise _invalid(
                "per_units",
                "must be absent or 1 with package_size",
                f"per_units ({data.per_units}) must be absent or 1 when package_size is "
                "given: unit_amount is then the price of one package of package_size units",
            )
    if data.minimum_amount is not None:
        places = currency_exponent(currency)
        if decimal_places(data.minimum_amount) > places:
            raise _invalid(
                "minimum_amount",
                f"more than {places} decimal places",
                f"minimum_amount ({data.minimum_amount}) must be an amount in {currency}, "
                f"at most {places} decimal places (its minor units)",
            )


def _describe(rule: PriceRule) -> str:
    whom = f"tenant '{rule.tenant_id}'" if rule.tenant_id else "the list price"
    match = ", ".join(f"{k}={v}" for k, v in sorted(rule.match.items())) or "all usage"
    until = _rfc3339(rule.effective_to) if rule.effective_to else "open-ended"
    return f"{whom}, {match}, from {_rfc3339(rule.effective_from)} until {until}"


# The preset's token meters catalog prices go on, and the cache-write fallbacks: relative to
# input, 1.25 times for 5-minute and 2 times for 1-hour writes (the usual provider markups).
CATALOG_METERS = (
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
)
CACHE_WRITE_5M_FACTOR = Decimal("1.25")
CACHE_WRITE_1H_FACTOR = Decimal(2)


def _catalog_price_plan(
    found: CatalogPrices,
) -> list[tuple[str, Decimal | None, RelativeToIn | None]]:
    """(meter, unit amount per 1M tokens, or a reference) for each price of one model."""
    plan: list[tuple[str, Decimal | None, RelativeToIn | None]] = []
    for meter, amount in (
        ("input_tokens", found.input),
        ("output_tokens", found.output),
        ("cache_read_tokens", found.cache_read),
    ):
        if amount is not None:
            plan.append((meter, amount, None))
    for meter, amount, factor in (
        ("cache_write_5m_tokens", found.cache_write_5m, CACHE_WRITE_5M_FACTOR),
        ("cache_write_1h_tokens", found.cache_write_1h, CACHE_WRITE_1H_FACTOR),
    ):
        if amount is not None:
            plan.append((meter, amount, None))
        elif found.input is not None:
            plan.append((meter, None, RelativeToIn(meter="input_tokens", factor=factor)))
    return plan


class PriceService:
    def __init__(self, session: AsyncSession) -> None:
        self.meters = MeterRepository(session)
        self.prices = PriceRepository(session)
        self.tenants = TenantRepository(session)

    async def create(self, data: PriceCreate) -> PriceOut:
        if data.relative_to is not None:
            # Before the meter lock (see lock_price_references).
            await self.prices.lock_price_references()
        # The lock serializes every price change of this meter (see the module docstring).
        meter = await self.meters.get(data.meter, for_update=True)
        if meter is None:
            raise _invalid(
                "meter",
                "unknown meter",
                f"meter '{data.meter}' does not exist; create it with POST /v1/meters first",
            )
        if data.tenant_id is not None and await self.tenants.get(data.tenant_id) is None:
            raise _invalid(
                "tenant_id", "unknown tenant", f"tenant '{data.tenant_id}' does not exist"
            )
        if meter.currency is None:
            raise _invalid(
                "meter",
                "meter has no currency",
                f"meter '{meter.event_name}' has no currency, so it cannot be priced; give it "
                f"one first (PATCH /v1/meters/{meter.event_name} with a currency)",
            )
        _validate_match(data.match, meter)
        per_units = (
            None
            if data.per_units is None
            else exact_decimal(data.per_units, "per_units", positive=True)
        )
        tiers = _checked_tiers(data.tiers)
        free_units = (
            Decimal(0) if data.free_units is None else exact_decimal(data.free_units, "free_units")
        )
        package_size = (
            None
            if data.package_size is None
            else exact_decimal(data.package_size, "package_size", positive=True)
        )
        minimum_amount = (
            None
            if data.minimum_amount is None
            else exact_decimal(data.minimum_amount, "minimum_amount")
        )
        _check_price_rules(data, meter.currency, tiers)
        relative_to = None
        unit_amount: Decimal | None
        if data.relative_to is not None:
            relative_to = await self._checked_reference(data.relative_to, meter)
            for field, given in (("unit_amount", data.unit_amount), ("tiers", tiers)):
                if given:
                    raise _invalid(
                        field,
                        "not with relative_to",
                        f"{field} cannot be given with relative_to: a relative price's amount "
                        "is a factor of the referenced meter's price",
                    )
            unit_amount = None
        else:
            per_units = Decimal(1) if per_units is None else per_units
            if data.unit_amount is not None:
                unit_amount = exact_decimal(data.unit_amount, "unit_amount")
            elif tiers:
                unit_amount = tiers[0].unit_amount  # stored for reference; tiers set the price
            else:
                raise _invalid(
                    "unit_amount",
                    "required",
                    'unit_amount is required (a string such as "2.50"; with package_size, the '
                    "price of one package), unless tiers or relative_to are given",
                )
        if data.effective_from is None:
            effective_from = next_price_boundary(datetime.now(UTC))
        else:
            effective_from = price_instant(data.effective_from, "effective_from")
        effective_to = None
        if data.effective_to is not None:
            effective_to = price_instant(data.effective_to, "effective_to")
            if effective_to <= effective_from:
                raise _invalid(
                    "effective_to",
                    "not after effective_from",
                    f"effective_to ({_rfc3339(effective_to)}) must be after effective_from "
                    f"({_rfc3339(effective_from)})",
                )
        price_id = uuid.uuid4()
        rule = PriceRule(
            id=str(price_id),
            meter=meter.event_name,
            currency=meter.currency,
            unit_amount=Decimal(0) if unit_amount is None else unit_amount,
            per_units=per_units,
            relative_to=relative_to,
            match=dict(data.match),
            tenant_id=data.tenant_id,
            tiers=tiers,
            tier_mode=data.tier_mode or "graduated",
            free_units=free_units,
            package_size=package_size,
            minimum_amount=minimum_amount,
            effective_from=effective_from,
            effective_to=effective_to,
        )
        await self._refuse_overlap(rule, meter)
        price = await self.prices.add(
            Price(
                id=price_id,
                meter_id=meter.id,
                tenant_id=data.tenant_id,
                unit_amount=unit_amount,
                per_units=per_units,
                relative_to_meter=None if relative_to is None else relative_to.meter,
                relative_factor=None if relative_to is None else relative_to.factor,
                match=dict(data.match),
                tiers=_tiers_to_json(tiers),
                tier_mode=rule.tier_mode,
                free_units=free_units,
                package_size=package_size,
                minimum_amount=minimum_amount,
                effective_from=effective_from,
                effective_to=effective_to,
            )
        )
        return price_out(price, meter)

    async def import_llm(
        self, data: LlmPriceImport, progress: Progress = NO_PROGRESS
    ) -> LlmPriceImportOut:
        """Per-model prices per 1,000,000 tokens on the LLM preset's token meters, from the
        bundled price catalog: input, output and cache reads as the catalog has them (the base
        tier where it has context-size tiers); cache writes too where it has them, else
        relative prices of 1.25 (5 minutes) and 2 (1 hour) times input, so an input override
        carries through. Models the catalog lacks are `not_found`; a price that would overlap
        an existing one is left out and listed in `conflicts`; the rest are created."""
        from service.meters import catalog  # its bundled data costs ~30 MB: only when used

        duplicates = sorted({model for model in data.models if data.models.count(model) > 1})
        if duplicates:
            raise _invalid(
                "models", "duplicate", f"models lists {', '.join(duplicates)} more than once"
            )
        if data.provider is not None:
            try:
                catalog.check_provider(data.provider)
            except catalog.UnknownProvider as exc:
                raise _invalid(
                    "provider",
                    "unknown provider",
                    f"provider '{data.provider}' is not in the price catalog; known: "
                    f"{', '.join(catalog.provider_ids())}",
                ) from exc
        if data.tenant_id is not None and await self.tenants.get(data.tenant_id) is None:
            raise _invalid(
                "tenant_id", "unknown tenant", f"tenant '{data.tenant_id}' does not exist"
            )
        if data.effective_from is None:
            effective_from = next_price_boundary(datetime.now(UTC))
        else:
            effective_from = price_instant(data.effective_from, "effective_from")
        # Relative prices are among those created: the references lock before any meter lock.
        await self.prices.lock_price_references()
        await self._require_catalog_meters(catalog.CATALOG_CURRENCY)
        answer = LlmPriceImportOut(created=[], not_found=[], conflicts=[])
        progress.start("importing LLM prices (models)", len(data.models))
        for index, model in enumerate(data.models):
            if index:
                progress.advance()  # the model before this one is done
            found = catalog.lookup(model, data.provider, effective_from)
            if found is None:
                answer.not_found.append(model)
                continue
            for meter, amount, relative_to in _catalog_price_plan(found):
                try:
                    created = await self.create(
                        PriceCreate(
                            meter=meter,
                            unit_amount=amount,
                            per_units=catalog.PER_MILLION,
                            relative_to=relative_to,
                            match={"model": model},
                            tenant_id=data.tenant_id,
                            effective_from=effective_from,
                        )
                    )
                except PriceOverlap as exc:
                    answer.conflicts.append(
                        ImportConflict(
                            model=model, meter=meter, price_id=uuid.UUID(exc.existing_price_id)
                        )
                    )
                    continue
                answer.created.append(created)
        if data.models:
            progress.advance()
        return answer

    async def _require_catalog_meters(self, currency: str) -> None:
        problems = []
        for name in CATALOG_METERS:
            meter = await self.meters.get(name)
            if meter is None:
                problems.append(f"'{name}' does not exist")
            elif meter.currency != currency:
                problems.append(
                    f"'{name}' bills in {meter.currency or 'no currency'}, the catalog in "
                    f"{currency}"
                )
        if problems:
            raise CatalogMetersMissing(
                "catalog prices go on the LLM preset's token meters: "
                + "; ".join(problems)
                + f". Create them with POST /v1/meters/presets/llm (currency {currency})"
            )

    async def _checked_reference(self, reference: RelativeToIn, meter: Meter) -> RelativeTo:
        """The reference of a new relative price on `meter`: an existing meter in the same
        currency, and no cycle of references (the caller holds the references lock)."""
        factor = exact_decimal(reference.factor, "relative_to.factor", positive=True)
        target = await self.meters.get(reference.meter)
        if target is None:
            raise _invalid(
                "relative_to.meter",
                "unknown meter",
                f"relative_to.meter: meter '{reference.meter}' does not exist",
            )
        if target.currency != meter.currency:
            raise _invalid(
                "relative_to.meter",
                "another currency",
                f"relative_to.meter: meter '{target.event_name}' bills in "
                f"{target.currency or 'no currency'}, meter '{meter.event_name}' in "
                f"{meter.currency}; a relative price refers to a meter of its own currency",
            )
        cycle = reference_cycle(await self.prices.references(), meter.event_name, target.event_name)
        if cycle:
            raise PriceCycle(
                "relative_to.meter: relative prices would refer in a cycle: "
                + " -> ".join(cycle)
                + "; a meter's price cannot depend, directly or not, on itself",
                errors=[FieldError(field="relative_to.meter", message="cycle")],
            )
        return RelativeTo(meter=target.event_name, factor=factor)

    async def _refuse_overlap(self, rule: PriceRule, meter: Meter) -> None:
        """409 when `rule` would compete with a stored price of the same meter and tenant level:
        the same match at an intersecting time (an overlap), or a different match of the same
        specificity that some usage could satisfy both of (which would leave invoices unable
        to choose)."""
        for stored in await self.prices.for_tenant_level(meter.id, rule.tenant_id):
            if str(stored.id) == rule.id:
                continue
            other = to_price_rule(stored, meter)
            if prices_overlap(rule, other):
                raise PriceOverlap(
                    existing_price_id=other.id,
                    detail=f"price {other.id} ({_describe(other)}) already prices meter "
                    f"'{meter.event_name}' for the same tenant and match in that time; end it "
                    f"first with POST /v1/prices/{other.id}/end, or let this price start when "
                    "it ends",
                )
            if prices_conflict(rule, other):
                raise PriceOverlap(
                    existing_price_id=other.id,
                    detail=f"price {other.id} ({_describe(other)}) would apply to the same usage "
                    f"as this one ({_describe(rule)}) with equal specificity, for usage carrying "
                    "both matches; add a key to one match so the more specific price wins, or "
                    "make their effective periods disjoint",
                )

    async def get(self, price_id: uuid.UUID, principal: Principal) -> PriceOut:
        found = await self.prices.get_with_meter(price_id)
        if found is None:
            raise NotFound(f"price '{price_id}' does not exist")
        price, meter = found
        if price.tenant_id is not None:
            principal.ensure_tenant(price.tenant_id)
        return price_out(price, meter)

    async def list(
        self,
        cursor: str | None,
        limit: int,
        *,
        meter: str | None,
        tenant_id: str | None,
        principal: Principal,
    ) -> Page[PriceOut]:
        if tenant_id is not None:
            principal.ensure_tenant(tenant_id)
        meter_id = None
        if meter is not None:
            found = await self.meters.get(meter)
            if found is None:
                return Page(items=[])
            meter_id = found.id
        after = None
        if cursor:
            created, price_id = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(created), uuid.UUID(price_id))
            except (TypeError, ValueError) as exc:
                raise InvalidInput("cursor is not one this API returned") from exc
        rows = await self.prices.list_after(
            after,
            limit + 1,
            meter_id=meter_id,
            tenant_id=tenant_id,
            visible_to_tenant=principal.tenant_id,
        )
        items = [price_out(price, price_meter) for price, price_meter in rows[:limit]]
        next_cursor = (
            encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    async def end(self, price_id: uuid.UUID, data: PriceEnd) -> PriceOut:
        """Set the price's effective_to (ending it, or moving its end), subject to the overlap
        rule. Setting the same effective_to again is a no-op."""
        effective_to = price_instant(data.effective_to, "effective_to")
        found = await self.prices.get(price_id)
        if found is None:
            raise NotFound(f"price '{price_id}' does not exist")
        meter = await self.meters.get_by_id(found.meter_id, for_update=True)
        price = await self.prices.get(price_id, for_update=True)  # re-read under the lock
        assert meter is not None and price is not None  # prices and meters are never deleted
        if effective_to <= price.effective_from:
            raise _invalid(
                "effective_to",
                "not after effective_from",
                f"effective_to ({_rfc3339(effective_to)}) must be after the price's "
                f"effective_from ({_rfc3339(price.effective_from)})",
            )
        if price.effective_to != effective_to:
            rule = dataclasses.replace(to_price_rule(price, meter), effective_to=effective_to)
            await self._refuse_overlap(rule, meter)
            price = await self.prices.set_effective_to(price, effective_to)
        return price_out(price, meter)

    async def rules_for(self, event_name: str, tenant_id: str | None) -> Sequence[PriceRule]:
        """The meter's list prices and, when tenant_id is given, that tenant's overrides, as
        pricing rules (what `resolve_price` and invoice rating take)."""
        meter = await self.meters.get(event_name)
        if meter is None:
            raise NotFound(f"meter '{event_name}' does not exist")
        return [
            to_price_rule(p, meter) for p in await self.prices.applicable_to(meter.id, tenant_id)
        ]
