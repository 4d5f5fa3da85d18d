"""Errors of the meters and prices admin API: one type per meaning, each with a stable code."""

from __future__ import annotations

from service.common.errors import Conflict


class MeterExists(Conflict):
    status, code, title = 409, "meter_exists", "Meter already exists"


class MeterHasEvents(Conflict):
    status, code, title = 409, "meter_has_events", "Meter already has events"


class DimensionRemoval(Conflict):
    status, code, title = 409, "dimension_removal", "Declared dimensions cannot be removed"


class PriceOverlap(Conflict):
    status, code, title = 409, "price_overlap", "Price overlaps an existing price"
