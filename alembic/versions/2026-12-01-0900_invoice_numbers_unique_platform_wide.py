"""invoice numbers unique platform-wide: the whole tenant id as prefix, one unique constraint

Revision ID: 8e3a61d0b2c7
Revises: 5b1f0c2e7a94
Create Date: 2026-12-01 09:00:00.000000+00:00

Numbers used the first 32 characters of the tenant id, so two tenants whose ids share them
got the same numbers, and uniqueness was only per tenant. Numbers now carry the whole id
(VARCHAR(96): 64 characters, '-', up to 19 digits). Existing numbers of ids longer than 32
characters are rewritten to the new form, in the column and in the stored document (the only
change to a finalized document, made because the old number did not identify the invoice);
the downgrade cuts them back.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "8e3a61d0b2c7"
down_revision: str | None = "5b1f0c2e7a94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_PREFIX_LENGTH = 32


def _renumber(prefix: str) -> None:
    """Set each long-id invoice's number to `prefix` || '-' || its counter, in the column and
    in the document (stored compact, so `"number":"…"` appears exactly once)."""
    new = f"{prefix} || '-' || substring(number from '[0-9]+$')"
    op.execute(
        f"UPDATE invoices SET number = {new}, "
        f"document = replace(document, '\"number\":\"' || number || '\"', "
        f"'\"number\":\"' || {new} || '\"') "
        f"WHERE length(tenant_id) > {OLD_PREFIX_LENGTH}"
    )


def upgrade() -> None:
    # env.py sets lock_timeout for the whole migration transaction.
    op.alter_column(
        "invoices",
        "number",
        existing_type=sa.String(length=40),
        type_=sa.String(length=96),
        existing_nullable=False,
    )
    _renumber("upper(tenant_id)")
    op.drop_index("uq_invoices_tenant_id_number", table_name="invoices")
    op.create_unique_constraint(op.f("uq_invoices_number"), "invoices", ["number"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_invoices_number"), "invoices", type_="unique")
    _renumber(f"upper(left(tenant_id, {OLD_PREFIX_LENGTH}))")
    op.create_index(
        "uq_invoices_tenant_id_number", "invoices", ["tenant_id", "number"], unique=True
    )
    op.alter_column(
        "invoices",
        "number",
        existing_type=sa.String(length=96),
        type_=sa.String(length=40),
        existing_nullable=False,
    )
