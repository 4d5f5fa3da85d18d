"""Reading rollups: a query (tenant, meters, window edges, group keys, filters, aggregates) is
answered with cells, one per meter, window and group, whoever asks (usage queries, invoices).

Window edges are on bucket edges, so every 15-minute bucket lies wholly in one window. An
attribution key is a column (an absent value is stored as '' and answered as None); any other
key is a dimension, read from the jsonb and passed as a parameter (never spliced into the SQL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

import asyncpg

from service.rollups.levels import (
    Grain,
    Pieces,
    SignedPiece,
    cut,
    cut_signed,
    grain_end,
    needed_bits,
    projection_for,
)
from service.rollups.models import ATTRIBUTION_FIELDS, MODEL_ROLLUP_FIELDS

Aggregate = Literal["sum", "count", "last"]
ALL_AGGREGATES: frozenset[Aggregate] = frozenset(("sum", "count", "last"))
SUM_AND_COUNT: frozenset[Aggregate] = frozenset(("sum", "count"))


@dataclass(frozen=True, slots=True)
class RollupQuery:
    """Usage of `meter_ids` of one tenant over [edges[0], edges[-1]), per meter, per window
    [edges[i], edges[i + 1]) and per combination of `group_by` values, counting only rollups
    whose `filters` keys hold one of the listed values.

    `sum` and `count` are always computed (they cost next to nothing); `last` (and the time of
    that last event) only when `aggregates` asks for it, since it sorts every group's rows."""

    tenant_id: str
    meter_ids: Sequence[int]
    edges: Sequence[datetime]  # sorted UTC instants on bucket edges, at least two
    group_by: Sequence[str] = ()
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    aggregates: frozenset[Aggregate] = ALL_AGGREGATES
    # unique_count meters: the key (attribution field or dimension) whose distinct values each
    # cell counts (Cell.distinct), among the rollup rows of the cell that counted events.
    distinct_key: str | None = None
    # The caller reads only the cells' sum and count (no latest, largest or distinct value):
    # a window may then be read as larger buckets minus what lies outside it (cut_signed).
    sums_only: bool = False

    @property
    def table(self) -> str:
        return rollup_table([*self.group_by, *self.filters])


@dataclass(frozen=True, slots=True)
class Cell:
    """One (meter, window, group): `window` indexes the query's edges (0 = the first window)."""

    meter_id: int
    window: int
    group: tuple[str | None, ...]  # values of the query's group_by, None where absent
    sum: Decimal
    count: int
    last: Decimal | None  # None when not asked for, or when the last event had no value
    last_ts: datetime | None
    # The id of that last event: (last_ts, last_event_id) orders cells' last events as `last`
    # itself does (ties in time to the later-stored event). None when not asked for.
    last_event_id: int | None = None
    # The largest value of the cell's rows that kept one (max meters), else None.
    max: Decimal | None = None
    # The number of distinct values of the query's distinct_key (None without one).
    distinct: int | None = None


def rollup_table(keys: Sequence[str]) -> str:
    """The 15-minute table for the quarter hours of a query: `model_rollups` when every group
    and filter key is `model` or a dimension (the same buckets folded over orgs, projects, API
    keys and users, far fewer rows), else the full-key `rollups`."""
    coarse = all(key in MODEL_ROLLUP_FIELDS or key not in ATTRIBUTION_FIELDS for key in keys)
    return "model_rollups" if coarse else "rollups"


class _Parameters:
    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


# What every source of a query's rows yields, before the window and group aggregation.
_SOURCE_COLUMNS = (
    "meter_id, bucket_start, {keys}, {sum} AS sum, {count} AS count, last_value, "
    "last_ts, last_event_id, max_value"
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a query's rows come from: per cube grain its projection and bucket starts, and
    the quarter hours read from the 15-minute table."""

    projections: dict[Grain, int]
    pieces: Pieces
    # Every grain with a projection that keeps the query's keys (used or not by `pieces`).
    all_projections: dict[Grain, int] = field(default_factory=dict)


def plan(query: RollupQuery) -> _Plan:
    keys = [*query.group_by, *query.filters]
    needed = needed_bits(keys)
    projections = {
        grain: projection
        for grain in Grain
        if (projection := projection_for(grain, needed)) is not None
    }
    pieces = cut(query.edges, projections)
    return _Plan({g: projections[g] for g in pieces.coarse_grains}, pieces, projections)


def _branch(
    index: int, query: RollupQuery, params: _Parameters, *, group_columns: bool = False
) -> str:
    """The SELECT answering one query; its rows start with the query's index.

    Rows come from up to five sources, each piece of the range from exactly one level: the
    cube cells of each grain used, the pending part of the 15-minute rows inside those cube
    buckets (not yet folded, so not in the cube), and the 15-minute rows of the quarter hours
    left over. One statement, so one snapshot: a fold commits atomically between two reads,
    never inside one."""
    if len(query.edges) < 2:
        raise ValueError("a rollup query needs at least two edges")
    if query.distinct_key is not None:
        return _distinct_branch(index, query, params, group_columns=group_columns)
    query_plan = plan(query)
    tenant = params.add(query.tenant_id)
    meters = params.add(list(query.meter_ids))
    # Group keys and filters, the same expressions in every source (projected-away fields
    # hold '' in the cube, but a projection keeps every key the query uses).
    key_columns: list[str] = []
    grouped: list[str] = []
    values: list[str] = []
    for position, key in enumerate(query.group_by):
        alias = f"k{position}"
        if key in ATTRIBUTION_FIELDS:
            key_columns.append(f"{key} AS {alias}")
            grouped.append(alias)
            values.append(f"nullif({alias}, '')")
        else:
            key_columns.append(f"(dimensions ->> {params.add(key)}::text) AS {alias}")
            grouped.append(alias)
            values.append(alias)
    filters = []
    for key, accepted in query.filters.items():
        column = key if key in ATTRIBUTION_FIELDS else f"(dimensions ->> {params.add(key)}::text)"
        filters.append(f"{column} = ANY({params.add(list(accepted))}::text[])")
    keys = ", ".join(key_columns) if key_columns else "NULL AS k"
    common = " AND ".join([f"tenant_id = {tenant}", f"meter_id = ANY({meters}::int[])", *filters])

    def source(table: str, condition: str, *, pending: bool = False) -> str:
        columns = _SOURCE_COLUMNS.format(
            keys=keys,
            sum="sum - folded_sum" if pending else "sum",
            count="count - folded_count" if pending else "count",
        )
        return f"SELECT {columns} FROM {table} WHERE {common} AND {condition}"

    if query.sums_only:
        signed = cut_signed(query.edges, query_plan.all_projections)
        if any(sign < 0 for _, _, _, sign in signed):
            return _signed_branch(
                index,
                query,
                params,
                signed,
                query_plan.all_projections,
                source,
                grouped,
                values,
                group_columns=group_columns,
            )
    sources = []
    pieces = query_plan.pieces
    for grain, projection in query_plan.projections.items():
        starts = params.add(pieces.coarse[grain])
        sources.append(
            source(
                "rollup_cube",
                f"grain = '{grain.value}' AND projection = {projection} "
                f"AND bucket_start = ANY({starts}::timestamptz[])",
            )
        )
    if query_plan.projections:
        # The pending rows of the cube's buckets: the whole range but the quarter hours.
        condition = (
            f"pending AND bucket_start >= {params.add(query.edges[0])}::timestamptz "
            f"AND bucket_start < {params.add(query.edges[-1])}::timestamptz"
        )
        if pieces.quarters:
            condition += (
                f" AND NOT (bucket_start = ANY({params.add(pieces.quarters)}::timestamptz[]))"
            )
        sources.append(source("rollups", condition, pending=True))
    if pieces.quarters:
        sources.append(
            source(
                query.table,
                f"bucket_start = ANY({params.add(pieces.quarters)}::timestamptz[])",
            )
        )
    if len(query.edges) > 2:
        window = f"width_bucket(bucket_start, {params.add(list(query.edges))}::timestamptz[])"
    else:
        window = "1"  # one window: no search
    if "last" in query.aggregates:
        last = (
            "(max(ARRAY[extract(epoch FROM last_ts), last_event_id::numeric, last_value]))[3] "
            "AS last, max(last_ts) AS last_ts, "
            "(max(ARRAY[extract(epoch FROM last_ts), last_event_id::numeric]))[2]::bigint "
            "AS last_event_id"
        )
    else:
        last = "NULL::numeric AS last, NULL::timestamptz AS last_ts, NULL::bigint AS last_event_id"
    group = _group_select(values, group_columns)
    union = "\n      UNION ALL\n      ".join(sources)
    # A pending row's whole max is added again to its cube bucket's: greatest is idempotent.
    return f"""SELECT {index} AS query, meter_id, {window} AS window_index, {group}
       sum(sum) AS sum, sum(count)::bigint AS count, {last},
       max(max_value) AS max, NULL::bigint AS distinct_count
FROM ({union}) AS r{index}
GROUP BY {", ".join(["meter_id", "window_index", *grouped])}"""


def _group_select(values: Sequence[str], group_columns: bool) -> str:
    """The group values of a branch's rows: columns g0, g1, ... (cheaper to decode) or one
    text array `grp`, each followed by a comma."""
    if group_columns:
        return "".join(f"{value} AS g{position}, " for position, value in enumerate(values))
    return (f"ARRAY[{', '.join(values)}]::text[]" if values else "ARRAY[]::text[]") + " AS grp, "


def _signed_branch(
    index: int,
    query: RollupQuery,
    params: _Parameters,
    pieces: Sequence[SignedPiece],
    projections: Mapping[Grain, int],
    source: Callable[..., str],
    grouped: Sequence[str],
    values: Sequence[str],
    *,
    group_columns: bool,
) -> str:
    """The SELECT of a sums-only query whose windows are cut with signs (`cut_signed`): every
    source row is joined to the pieces it lies in, each giving its window and sign, and sums
    and counts are added with those signs. A cube cell counts for its pieces; the pending
    part of the 15-minute rows inside a cube piece counts for that piece (the cell does not
    hold it yet); a quarter-hour piece reads its 15-minute rows whole. Groups whose events
    all lie outside their window (added and taken away again) net to a count of 0 and are
    left out."""

    def at_starts(table: str, condition: str, mine: list[tuple[datetime, int, int]]) -> str:
        """Rows of `table` meeting `condition` whose bucket starts one of `mine` (start,
        window from 1, sign), once per piece."""
        starts = params.add(sorted({at for at, _, _ in mine}))
        rows = source(table, f"{condition}bucket_start = ANY({starts}::timestamptz[])")
        at, window, sign = (params.add([piece[i] for piece in mine]) for i in range(3))
        return (
            f"SELECT p.w, p.sign, s.* FROM ({rows}) AS s JOIN unnest({at}::timestamptz[], "
            f"{window}::int[], {sign}::int[]) AS p(start_at, w, sign) "
            "ON s.bucket_start = p.start_at"
        )

    sources = []
    for grain, projection in projections.items():
        mine = [(at, window + 1, sign) for g, at, window, sign in pieces if g is grain]
        if mine:
            condition = f"grain = '{grain.value}' AND projection = {projection} AND "
            sources.append(at_starts("rollup_cube", condition, mine))
    cube = [
        (at, grain_end(grain, at), window + 1, sign)
        for grain, at, window, sign in pieces
        if grain is not None
    ]
    if cube:
        # The pending part of the 15-minute rows inside each cube piece, for that piece.
        rows = source(
            "rollups",
            f"pending AND bucket_start >= {params.add(min(p[0] for p in cube))}::timestamptz "
            f"AND bucket_start < {params.add(max(p[1] for p in cube))}::timestamptz",
            pending=True,
        )
        start, end, window, sign = (params.add([piece[i] for piece in cube]) for i in range(4))
        sources.append(
            f"SELECT p.w, p.sign, s.* FROM ({rows}) AS s JOIN unnest({start}::timestamptz[], "
            f"{end}::timestamptz[], {window}::int[], {sign}::int[]) "
            "AS p(start_at, end_at, w, sign) "
            "ON s.bucket_start >= p.start_at AND s.bucket_start < p.end_at"
        )
    quarters = [(at, window + 1, sign) for grain, at, window, sign in pieces if grain is None]
    if quarters:
        sources.append(at_starts(query.table, "", quarters))
    group = _group_select(values, group_columns)
    union = "\n      UNION ALL\n      ".join(sources)
    return f"""SELECT {index} AS query, meter_id, w AS window_index, {group}
       sum(r{index}.sign * r{index}.sum) AS sum,
       sum(r{index}.sign * r{index}.count)::bigint AS count,
       NULL::numeric AS last, NULL::timestamptz AS last_ts, NULL::bigint AS last_event_id,
       NULL::numeric AS max, NULL::bigint AS distinct_count
FROM ({union}) AS r{index}
GROUP BY {", ".join(["meter_id", "w", *grouped])}
HAVING sum(r{index}.sign * r{index}.count) <> 0"""


def _distinct_branch(
    index: int, query: RollupQuery, params: _Parameters, *, group_columns: bool
) -> str:
    """The SELECT of a query with a distinct_key: the cells of the same query grouped by that
    key as well (from whichever level keeps it: a month's cube projection with the key, the
    15-minute rows elsewhere), then counted per window and group. A value counts once however
    many buckets, days or levels it appears in; rows whose events were all taken back (count
    0) and events without the key (absent value) count nothing."""
    assert query.distinct_key is not None
    shown = len(query.group_by)
    inner = _branch(
        index,
        dataclasses.replace(
            query,
            group_by=(*query.group_by, query.distinct_key),
            distinct_key=None,
            aggregates=SUM_AND_COUNT,
        ),
        params,
        group_columns=True,
    )
    columns = [f"g{position}" for position in range(shown)]
    group = _group_select(columns, group_columns)
    return f"""SELECT {index} AS query, meter_id, window_index, {group}
       sum(sum) AS sum, sum(count)::bigint AS count, NULL::numeric AS last,
       NULL::timestamptz AS last_ts, NULL::bigint AS last_event_id, NULL::numeric AS max,
       count(*) FILTER (WHERE count > 0 AND g{shown} IS NOT NULL) AS distinct_count
FROM ({inner}) AS d{index}
GROUP BY {", ".join(["meter_id", "window_index", *columns])}"""


def rollup_sql(queries: Sequence[RollupQuery]) -> tuple[str, list[object]]:
    """One statement answering every query (UNION ALL), and its parameters."""
    params = _Parameters()
    branches = [_branch(index, query, params) for index, query in enumerate(queries)]
    return "\nUNION ALL\n".join(branches), params.values


async def read_cells(
    connection: asyncpg.Connection, queries: Sequence[RollupQuery]
) -> list[list[Cell]]:
    """The cells of each query, in one round trip, in no particular order.

    JIT compilation is off on every connection of the service (service.db.session)."""
    if not queries:
        return []
    sql, params = rollup_sql(queries)
    results: list[list[Cell]] = [[] for _ in queries]
    for record in await connection.fetch(sql, *params):
        results[record["query"]].append(
            Cell(
                meter_id=record["meter_id"],
                window=record["window_index"] - 1,
                group=tuple(record["grp"]),
                sum=record["sum"],
                count=record["count"],
                last=record["last"],
                last_ts=record["last_ts"],
                last_event_id=record["last_event_id"],
                max=record["max"],
                distinct=record["distinct_count"],
            )
        )
    return results


# The API's rendering of a cell's numbers, in SQL so that big answers skip Python decimals:
# numeric::text is positional and keeps the value's scale, as service.common.money's
# to_plain_string; avg is sum / count rounded half-up (away from zero: a refunds meter's sum
# may be negative) to 12 places, trailing zeros removed: exact integer division of
# 2·|sum|·10^12 + count by 2·count, with the sign of the sum.
AVERAGE_SQL = (
    "trim_scale(sign(sum) * div(2 * abs(sum) * 1000000000000 + count, 2 * count) "
    "* 0.000000000001)::text"
)


_KEY_ORDER = ("org_id", "project_id", "api_key_id", "user_id", "model")


def _direct_cells(query: RollupQuery, query_plan: _Plan) -> tuple[Grain, int] | None:
    """The cube grain and projection whose cells are the answer rows themselves (no
    aggregation): one cell per window and group. So when every window is one bucket of one
    grain, the projection keeps exactly the grouped fields (filters only on grouped fields),
    and no dimension is involved (cells are per whole dimension set). Pending rows in the
    range rule it out too; the caller checks that."""
    keys = [*query.group_by, *query.filters]
    if query.distinct_key is not None:
        return None
    if query_plan.pieces.quarters or len(query_plan.projections) != 1:
        return None
    if any(key not in ATTRIBUTION_FIELDS for key in keys):
        return None
    if not set(query.filters) <= set(query.group_by):
        return None
    ((grain, projection),) = query_plan.projections.items()
    if projection != needed_bits(query.group_by):
        return None
    if len(query_plan.pieces.coarse[grain]) != len(query.edges) - 1:
        return None
    return grain, projection


def _rendered_columns(groups: Sequence[str]) -> str:
    return (
        f"{''.join(g + ', ' for g in groups)}sum::text AS sum, count, last::text AS last, "
        f"{AVERAGE_SQL} AS avg, max::text AS max, distinct_count"
    )


def _pending_sql(query: RollupQuery, params: _Parameters) -> str:
    """Whether any 15-minute row of the query's meters and range is not folded yet."""
    return (
        f"EXISTS (SELECT FROM rollups WHERE tenant_id = {params.add(query.tenant_id)} "
        f"AND pending AND bucket_start >= {params.add(query.edges[0])}::timestamptz "
        f"AND bucket_start < {params.add(query.edges[-1])}::timestamptz "
        f"AND meter_id = ANY({params.add(list(query.meter_ids))}::int[]))"
    )


def _direct_sql(
    query: RollupQuery, query_plan: _Plan, direct: tuple[Grain, int], params: _Parameters
) -> tuple[str, str, str]:
    """(window index expression (1 = the first), group columns `nullif(key, '') AS g0, ...`
    ending with a comma, WHERE conditions) reading the cube cells that are a query's answer
    rows (`_direct_cells`)."""
    grain, projection = direct
    if len(query.edges) > 2:
        window = f"width_bucket(bucket_start, {params.add(list(query.edges))}::timestamptz[])"
    else:
        window = "1"
    # One meter and one bucket are compared with =, not = ANY: PostgreSQL then knows the
    # index returns the cells in key order and does not sort them.
    meters, starts = list(query.meter_ids), query_plan.pieces.coarse[grain]
    conditions = [
        f"tenant_id = {params.add(query.tenant_id)}",
        f"meter_id = {params.add(meters[0])}"
        if len(meters) == 1
        else f"meter_id = ANY({params.add(meters)}::int[])",
        f"grain = '{grain.value}'",
        f"projection = {projection}",
        f"bucket_start = {params.add(starts[0])}::timestamptz"
        if len(starts) == 1
        else f"bucket_start = ANY({params.add(starts)}::timestamptz[])",
        *(
            f"{key} = ANY({params.add(list(accepted))}::text[])"
            for key, accepted in query.filters.items()
        ),
    ]
    values = "".join(
        f"nullif({key}, '') AS g{position}, " for position, key in enumerate(query.group_by)
    )
    return window, values, " AND ".join(conditions)


async def read_rendered(connection: asyncpg.Connection, query: RollupQuery) -> list[asyncpg.Record]:
    """The cells of one query as the API shows them: records of meter_id, window (0 = the
    first), g0, g1, ... (group values, None where absent), sum, count, last and avg (text),
    in meter, window and group order (by code point, an absent value first).

    When the cube's cells are the answer (a month grouped by user: one cell per user) they are
    read as they are; otherwise the pieces are aggregated. Both statements run
    in one read-only REPEATABLE READ transaction, so the check for pending rows and the read
    see the same snapshot, with memory enough to aggregate and sort a 100,000-row answer
    without spilling to disk (the default 4 MB would)."""
    query_plan = plan(query)
    direct = _direct_cells(query, query_plan)
    params, pending_params = _Parameters(), _Parameters()
    groups = [f"g{position}" for position in range(len(query.group_by))]
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        await connection.execute("SET LOCAL work_mem = '64MB'")
        if direct is not None and not await connection.fetchval(
            f"SELECT {_pending_sql(query, pending_params)}", *pending_params.values
        ):
            # One bucket (a month by user and model): a statement per meter, each reading the
            # cells in index order (no sort: 0.1 s less for 80,000 cells, 0.13-0.37 s for
            # 320,000); several buckets (days): one statement, sorted.
            single = len(query_plan.pieces.coarse[direct[0]]) == 1
            parts = (
                [
                    dataclasses.replace(query, meter_ids=[meter])
                    for meter in sorted(set(query.meter_ids))
                ]
                if single
                else [query]
            )
            rows = []
            for part in parts:
                part_params = _Parameters()
                window, values, conditions = _direct_sql(part, query_plan, direct, part_params)
                # The key columns are in the "C" collation: ordering by them is code point
                # order, '' (absent) first, as answers list groups; fields not grouped hold ''.
                sql = f"""SELECT meter_id, {window} - 1 AS window, {values}sum::text AS sum, count,
       last_value::text AS last, {AVERAGE_SQL} AS avg, max_value::text AS max,
       NULL::bigint AS distinct_count
FROM rollup_cube
WHERE {conditions}
ORDER BY meter_id, bucket_start, {", ".join(_KEY_ORDER)}"""
                rows += await connection.fetch(sql, *part_params.values)
            if list(query.group_by) != sorted(query.group_by, key=_KEY_ORDER.index):
                rows.sort(key=lambda r: (r[0], r[1], *(r[g] or "" for g in groups)))
            return rows
        branch = _branch(0, query, params, group_columns=True)
        order = [f'{g} COLLATE "C" NULLS FIRST' for g in groups]
        sql = f"""SELECT meter_id, window_index - 1 AS window, {_rendered_columns(groups)}
FROM ({branch}) AS cells
ORDER BY {", ".join(["meter_id", "window_index", *order])}"""
        return list(await connection.fetch(sql, *params.values))


@dataclass(frozen=True, slots=True)
class Weighting:
    """How `read_weighted` prices a query's cells: each cell's quantity (its `sum`, or its
    `count`) times the weight of its part of the range and its values of the weight keys.

    `windows` and `parts` give, per piece of the query's range (edges[i], edges[i + 1]), the
    answer window and the weights' part it lies in. `weights` holds (part, values of the
    query's group keys at `keys`, absent as '', weight per unit); a cell without a weight is
    counted apart (`unweighted`). The answer is grouped by window and the first `shown` group
    keys of the query."""

    quantity: Literal["sum", "count"]
    shown: int
    keys: Sequence[int]
    windows: Sequence[int]
    parts: Sequence[int]
    weights: Sequence[tuple[int, tuple[str, ...], Decimal]]
    # Round each answer cell's weighted sum to this many decimal places (None: exact).
    places: int | None = None


@dataclass(frozen=True, slots=True)
class WeightedCell:
    window: int
    group: tuple[str | None, ...]  # values of the first `shown` group keys, None where absent
    quantity: Decimal  # of the weighted cells
    cost: Decimal  # the sum of quantity x weight, exact
    unweighted: Decimal  # quantity of cells without a weight


async def read_weighted(
    connection: asyncpg.Connection, query: RollupQuery, weighting: Weighting
) -> list[WeightedCell]:
    """The weighted sums of one query's cells, per answer window and shown group, in no
    particular order: the products are summed by PostgreSQL, so only answer rows reach Python
    (a month by user over user x model cells returns one row per user)."""
    params = _Parameters()
    source = f"({_branch(0, query, params, group_columns=True)})"
    direct = _direct_cells(query, query_plan := plan(query))
    if direct is not None:
        # When nothing in the range is pending, the cube's cells are the cells (one per window
        # and group): read them as they are rather than aggregate them again (a month by API
        # key and model at 10M events: 160,000 cells per meter). One statement, so the test
        # and the read share a snapshot; PostgreSQL runs only the side the test leaves.
        window, values, conditions = _direct_sql(query, query_plan, direct, params)
        pending = _pending_sql(query, params)
        groups = "".join(f"g{position}, " for position in range(len(query.group_by)))
        source = f"""(SELECT meter_id, {window} AS window_index, {values}sum, count
FROM rollup_cube WHERE {conditions} AND NOT {pending}
UNION ALL
SELECT meter_id, window_index, {groups}sum, count FROM {source} AS b WHERE {pending})"""
    # One answer window or one part of the weights (a month, no price change inside): a
    # constant, not an array lookup per cell.
    if len(set(weighting.windows)) == 1:
        window_of = str(int(weighting.windows[0]))
    else:
        window_of = f"({params.add(list(weighting.windows))}::int[])[c.window_index]"
    if len(set(weighting.parts)) == 1:
        part_of = str(int(weighting.parts[0]))
    else:
        part_of = f"({params.add(list(weighting.parts))}::int[])[c.window_index]"
    part_column = params.add([part for part, _, _ in weighting.weights])
    key_columns = [
        params.add([values[index] for _, values, _ in weighting.weights])
        for index in range(len(weighting.keys))
    ]
    weight_column = params.add([weight for _, _, weight in weighting.weights])
    unnest = ", ".join(
        [
            f"{part_column}::int[]",
            *(f"{c}::text[]" for c in key_columns),
            f"{weight_column}::numeric[]",
        ]
    )
    names = ", ".join(["part", *(f"k{i}" for i in range(len(key_columns))), "weight"])
    join = " AND ".join(
        [
            f"w.part = {part_of}",
            *(f"w.k{i} = coalesce(c.g{position}, '')" for i, position in enumerate(weighting.keys)),
        ]
    )
    quantity = "c.sum" if weighting.quantity == "sum" else "c.count::numeric"
    cost = f"coalesce(sum({quantity} * w.weight), 0)"
    if weighting.places is not None:
        cost = f"round({cost}, {int(weighting.places)})"
    shown = [f"c.g{i}" for i in range(weighting.shown)]
    sql = f"""SELECT {window_of} AS window{"".join(", " + g for g in shown)},
       coalesce(sum({quantity}) FILTER (WHERE w.weight IS NOT NULL), 0) AS quantity,
       {cost} AS cost,
       coalesce(sum({quantity}) FILTER (WHERE w.weight IS NULL), 0) AS unweighted
FROM {source} AS c
LEFT JOIN unnest({unnest}) AS w({names}) ON {join}
GROUP BY {", ".join(["1", *shown])}"""
    return [
        WeightedCell(
            window=record[0],
            group=tuple(record[1 : 1 + weighting.shown]),
            quantity=record["quantity"],
            cost=record["cost"],
            unweighted=record["unweighted"],
        )
        for record in await connection.fetch(sql, *params.values)
    ]
