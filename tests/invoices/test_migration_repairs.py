"""The billing migrations repair rows written before their constraints existed: prices and
invoice periods outside the billable range, and invoice numbers cut to 32 characters."""

from __future__ import annotations

import json

import psycopg2
from sqlalchemy.engine import make_url

from alembic import command
from service.db.migrations import alembic_config
from tests.conftest import in_thread
from tests.test_migrations import scratch_database  # noqa: F401 (a fixture)

BEFORE_RANGES = "c1055d5c4835"
LONG_ID = "a" * 32 + "-east"


def _run(url: str, *statements: str) -> list[tuple[object, ...]]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg2.connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def _invoice(number: str, period: str, start: str, end: str) -> str:
    document = json.dumps(
        {"id": "x", "number": number, "status": "finalized"}, separators=(",", ":")
    )
    return (
        "INSERT INTO invoices (tenant_id, id, number, status, period, period_start, period_end, "
        "currency, subtotal, total, lines, document, finalized_at) VALUES "
        f"('{LONG_ID}', gen_random_uuid(), '{number}', 'finalized', '{period}', '{start}', "
        f"'{end}', 'USD', 0, 0, '[]', '{document}', now())"
    )


def test_upgrade_repairs_rows_out_of_range_and_cut_numbers(
    scratch_database: str,  # noqa: F811
) -> None:
    config = alembic_config(scratch_database)
    in_thread(command.upgrade, config, BEFORE_RANGES)
    cut = LONG_ID.upper()[:32]
    _run(
        scratch_database,
        "INSERT INTO meters (event_name, name, aggregation, currency) "
        "VALUES ('tokens', 'Tokens', 'sum', 'USD')",
        "INSERT INTO prices (id, meter_id, unit_amount, effective_from, effective_to) VALUES "
        "('00000000-0000-0000-0000-000000000001', 1, 1, '-infinity', 'infinity'), "
        "('00000000-0000-0000-0000-000000000002', 1, 1, '0001-01-01Z', '1999-01-01Z'), "
        "('00000000-0000-0000-0000-000000000003', 1, 1, '2026-01-01Z', NULL)",
        _invoice(f"{cut}-000001", "0001-01", "-infinity", "0001-02-01Z"),
        _invoice(f"{cut}-000002", "2026-10", "2026-10-01Z", "2026-11-01Z"),
    )
    in_thread(command.upgrade, config, "head")
    prices = _run(
        scratch_database,
        "SELECT id::text, effective_from::text, effective_to::text FROM prices ORDER BY id",
    )
    assert prices == [
        (
            "00000000-0000-0000-0000-000000000001",
            "2000-01-01 00:00:00+00",
            "9000-01-01 00:00:00+00",
        ),
        ("00000000-0000-0000-0000-000000000003", "2026-01-01 00:00:00+00", None),
    ]
    invoices = _run(
        scratch_database,
        "SELECT number, period_start::text, period_end::text, document FROM invoices "
        "ORDER BY number",
    )
    full = LONG_ID.upper()
    assert [row[:3] for row in invoices] == [
        (f"{full}-000001", "2000-01-01 00:00:00+00", "2000-01-01 00:00:00+00"),
        (f"{full}-000002", "2026-10-01 00:00:00+00", "2026-11-01 00:00:00+00"),
    ]
    assert [json.loads(str(row[3]))["number"] for row in invoices] == [row[0] for row in invoices]
    in_thread(command.downgrade, config, BEFORE_RANGES)
    numbers = _run(scratch_database, "SELECT number FROM invoices ORDER BY number")
    assert numbers == [(f"{cut}-000001",), (f"{cut}-000002",)]
