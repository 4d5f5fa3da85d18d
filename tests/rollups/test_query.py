"""The rollup store's read path without a database: which table answers, and that keys and
values reach the SQL as parameters only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.rollups.query import (
    SUM_AND_COUNT,
    RollupQuery,
    _direct_cells,
    plan,
    rollup_sql,
    rollup_table,
)

EDGES = [datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("keys", "table"),
    [
        ([], "model_rollups"),
        (["model"], "model_rollups"),
        (["model", "region"], "model_rollups"),  # a dimension
        (["user_id"], "rollups"),
        (["model", "api_key_id"], "rollups"),
        (["org_id"], "rollups"),
    ],
)
def test_model_rollups_answer_when_only_model_and_dimensions_are_used(
    keys: list[str], table: str
) -> None:
    assert rollup_table(keys) == table


def test_filters_count_like_group_keys() -> None:
    grouped = RollupQuery(tenant_id="acme", meter_ids=[1], edges=EDGES, group_by=["model"])
    filtered = RollupQuery(
        tenant_id="acme",
        meter_ids=[1],
        edges=EDGES,
        group_by=["model"],
        filters={"project_id": ["p1"]},
    )
    assert grouped.table == "model_rollups"
    assert filtered.table == "rollups"


def test_one_statement_for_several_queries_with_values_as_parameters() -> None:
    hostile = "x'); DROP TABLE events; --"
    queries = [
        RollupQuery(
            tenant_id="acme",
            meter_ids=[1, 2],
            edges=[EDGES[0], datetime(2026, 11, 15, tzinfo=UTC), EDGES[1]],
            group_by=["user_id", hostile],
            filters={hostile: [hostile]},
        ),
        RollupQuery(tenant_id="acme", meter_ids=[3], edges=EDGES, aggregates=SUM_AND_COUNT),
    ]
    sql, params = rollup_sql(queries)
    assert sql.count(" AS query,") == 2  # one SELECT per query, in one statement
    assert hostile not in sql
    assert params.count(hostile) == 2 and [hostile] in params  # keys, then the values
    assert "width_bucket" in sql.split("\nUNION ALL\n")[0]
    # The second query has one window and does not ask for `last`.
    assert "width_bucket" not in sql.split("\nUNION ALL\n")[1]
    assert "NULL::numeric AS last" in sql.split("\nUNION ALL\n")[1]


@pytest.mark.parametrize(
    ("group_by", "filters", "edges", "direct"),
    [
        (["user_id"], {}, EDGES, True),  # a UTC month: one cell per user
        (["model", "user_id"], {}, EDGES, True),  # any order of the grouped fields
        (["user_id"], {"user_id": ["u1"]}, EDGES, True),  # filtered on a grouped field
        (["user_id"], {"project_id": ["p1"]}, EDGES, False),  # cells per user and project
        (["model"], {}, EDGES, False),  # cells per model and dimension set
        (["region"], {}, EDGES, False),  # a dimension
        ([], {}, EDGES, False),  # cells per org, summed
        # A Berlin month: an hour, 29 days and 23 hours per user.
        (
            ["user_id"],
            {},
            [datetime(2026, 10, 31, 23, tzinfo=UTC), datetime(2026, 11, 30, 23, tzinfo=UTC)],
            False,
        ),
        # Daily windows in UTC: one day cell per window and user.
        (["user_id"], {}, [datetime(2026, 11, d, tzinfo=UTC) for d in range(1, 8)], True),
    ],
)
def test_cells_are_the_answer_only_when_each_row_is_one_cell(
    group_by: list[str], filters: dict[str, list[str]], edges: list[datetime], direct: bool
) -> None:
    query = RollupQuery(
        tenant_id="acme", meter_ids=[1], edges=edges, group_by=group_by, filters=filters
    )
    assert (_direct_cells(query, plan(query)) is not None) is direct
