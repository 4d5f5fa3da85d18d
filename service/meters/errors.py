"""Errors of the meters and prices admin API: one type per meaning, each with a stable code."""

from __future__ import annotations

from service.common.errors import Conflict, InvalidInput


class MeterExists(Conflict):
    status, code, title = 409, "meter_exists", "Meter already exists"


class MeterHasEvents(Conflict):
    status, code, title = 409, "meter_has_events", "Meter already has events"


class DimensionRemoval(Conflict):
    status, code, title = 409, "dimension_removal", "Declared dimensions cannot be removed"


class PriceOverlap(Conflict):
    status, code, title = 409, "price_overlap", "Price overlaps an existing price"

    def __init__(self, detail: str, *, existing_price_id: str) -> None:
        super().__init__(detail)
        self.existing_price_id = existing_price_id


class PriceCycle(InvalidInput):
    status, code, title = 422, "price_cycle", "Relative prices would refer in a cycle"


class PresetConflict(Conflict):
    status, code, title = 409, "preset_conflict", "A meter of the preset exists with another shape"


class CatalogMetersMissing(Conflict):
    status, code, title = 409, "preset_missing", "The LLM preset meters are missing or unfit"
