"""A meter's usage over a billing period as rating takes it: read from the rollup store
grouped by the keys its prices match on, split where a price starts or ends inside the period.
Invoices and costs ask the same question, so they rate the same quantities."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from service.invoices.rating import GroupUsage, SegmentUsage
from service.invoices.repository import MeterPricing
from service.meters.pricing import price_boundaries
from service.rollups.query import ALL_AGGREGATES, SUM_AND_COUNT, Cell, RollupQuery


def period_query(
    tenant_id: str, meter: MeterPricing, start: datetime, end: datetime
) -> RollupQuery:
    """The rollup query for `meter`'s usage by `tenant_id` over `[start, end)`. A
    unique_count meter's usage is grouped by its unique_key as well (the last group key):
    a price's quantity counts each value once over all the groups it prices."""
    group_by = meter.group_keys
    if meter.info.unique_key is not None:
        group_by = (*group_by, meter.info.unique_key)
    return RollupQuery(
        tenant_id=tenant_id,
        meter_ids=[meter.meter_id],
        # The period split where a price starts or ends inside it.
        edges=[start, *price_boundaries(meter.prices, start, end), end],
        group_by=group_by,
        aggregates=ALL_AGGREGATES if meter.info.aggregation == "last" else SUM_AND_COUNT,
        sums_only=meter.info.aggregation in ("sum", "count"),
    )


def group_usage(
    query: RollupQuery, cells: Sequence[Cell], *, unique_key: str | None = None
) -> list[GroupUsage]:
    """The cells of a `period_query` as rating's groups, their segments in time order. With
    `unique_key` (a unique_count meter's: the query's last group key) the cells of a group and
    segment become one segment holding the distinct values that counted events."""
    if unique_key is not None:
        return _distinct_groups(query, cells)
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
                max=cell.max,
            )
        )
    return [
        GroupUsage(
            attributes=dict(zip(query.group_by, values, strict=True)),
            segments=tuple(sorted(segments, key=lambda s: s.start)),
        )
        for values, segments in groups.items()
    ]


def _distinct_groups(query: RollupQuery, cells: Sequence[Cell]) -> list[GroupUsage]:
    keys = query.group_by[:-1]
    # (group values, window) -> (sum, count, distinct values counted)
    pieces: dict[tuple[tuple[str | None, ...], int], tuple[Decimal, int, set[str]]] = {}
    for cell in cells:
        group, value = cell.group[:-1], cell.group[-1]
        total, count, values = pieces.get((group, cell.window), (Decimal(0), 0, set()))
        # Cells whose events were all taken back (count 0) count no value.
        if value is not None and cell.count > 0:
            values.add(value)
        pieces[(group, cell.window)] = (total + cell.sum, count + cell.count, values)
    groups: dict[tuple[str | None, ...], list[SegmentUsage]] = {}
    for (group, window), (total, count, values) in pieces.items():
        groups.setdefault(group, []).append(
            SegmentUsage(
                start=query.edges[window],
                end=query.edges[window + 1],
                sum=total,
                count=count,
                distinct=frozenset(values),
            )
        )
    return [
        GroupUsage(
            attributes=dict(zip(keys, values, strict=True)),
            segments=tuple(sorted(segments, key=lambda s: s.start)),
        )
        for values, segments in groups.items()
    ]
