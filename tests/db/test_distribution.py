"""The schema distributes by tenant (Citus): every table with a tenant_id column, as the
migrations build it, has tenant_id first in its primary key and in every unique constraint or
unique index, and the deployment guide distributes it."""

from __future__ import annotations

import re

import asyncpg

from service.paths import PROJECT_ROOT

# Platform-wide (reference) tables that carry a tenant_id as an attribute, not as their key.
REFERENCE_TABLES = {"api_keys", "prices", "webhook_endpoints"}

KEYS = """
SELECT c.relname AS table_name, i.indexrelid::regclass::text AS key_name,
       array_agg(a.attname ORDER BY k.ordinality) AS columns
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ordinality)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE i.indisunique AND c.relname <> 'alembic_version'
GROUP BY 1, 2
"""


async def test_tenant_tables_lead_every_key_with_tenant_id(pg_pool: asyncpg.Pool) -> None:
    tenant_tables = {
        row["table_name"]
        for row in await pg_pool.fetch(
            "SELECT c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.column_name = 'tenant_id' AND c.table_schema = 'public' "
            "AND t.table_type = 'BASE TABLE'"
        )
    } - REFERENCE_TABLES
    assert {"events", "rollup_rows", "model_rollup_rows", "rollup_cube", "invoices"} <= (
        tenant_tables
    )
    problems = [
        f"{row['table_name']}.{row['key_name']} {row['columns']}"
        for row in await pg_pool.fetch(KEYS)
        if row["table_name"] in tenant_tables and row["columns"][0] != "tenant_id"
    ]
    assert problems == []


async def test_the_deployment_guide_distributes_every_tenant_table(pg_pool: asyncpg.Pool) -> None:
    guide = (PROJECT_ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    distributed = set(re.findall(r"create_distributed_table\('(\w+)',\s+'tenant_id'", guide))
    referenced = set(re.findall(r"create_reference_table\('(\w+)'\)", guide))
    tables = {
        row["table_name"]
        for row in await pg_pool.fetch(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name <> 'alembic_version' "
            "AND table_type = 'BASE TABLE'"
        )
    }
    with_tenant = {
        row["table_name"]
        for row in await pg_pool.fetch(
            "SELECT c.table_name FROM information_schema.columns c "
            "JOIN information_schema.tables t USING (table_schema, table_name) "
            "WHERE c.column_name = 'tenant_id' AND c.table_schema = 'public' "
            "AND t.table_type = 'BASE TABLE'"
        )
    }
    assert with_tenant - REFERENCE_TABLES == distributed
    assert tables == distributed | referenced
