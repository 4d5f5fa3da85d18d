"""A meter's usage over a billing period as rating takes it: read from the rollup store
grouped by the keys its prices match on, split where a price starts or ends inside the period.
Invoices and costs ask the same question, so they rate the same quantities."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from service.invoices.rating import GroupUsage, SegmentUsage
from service.invoices.repository import MeterPricing
from service.meters.pricing import price_boundaries
from service.rollups.query import ALL_AGGREGATES, SUM_AND_COUNT, Cell, RollupQuery


def period_query(
    tenant_id: str, meter: MeterPricing, start: datetime, end: datetime
) -> RollupQuery:
    """The rollup query for `meter`'s usage by `tenant_id` over `[start, end)`."""
    return RollupQuery(
        tenant_id=tenant_id,
        meter_ids=[meter.meter_id],
        # The period split where a price starts or ends inside it.
        edges=[start, *price_boundaries(meter.prices, start, end), end],
        group_by=meter.group_keys,
        aggregates=ALL_AGGREGATES if meter.info.aggregation == "last" else SUM_AND_COUNT,
    )


def group_usage(query: RollupQuery, cells: Sequence[Cell]) -> list[GroupUsage]:
    """The cells of a `period_query` as rating's groups, their segments in time order."""
    groups: dict[tuple[str | None, ...], list[SegmentUsage]] = {}
    for cell in cells:
        groups.setdefault(cell.group, []).append(
            SegmentUsage(
                start=query.edges[cell.window],
                end=query.edges[cell.window + 1],
                sum=cell.sum,
                count=cell.count,
                last=cell.last,
                last_at=cell.last_ts,
            )
        )
    return [
        GroupUsage(
            attributes=dict(zip(query.group_by, values, strict=True)),
            segments=tuple(sorted(segments, key=lambda s: s.start)),
        )
        for values, segments in groups.items()
    ]
