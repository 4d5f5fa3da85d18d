"""invoice numbers: unique per tenant and prefixed by the tenant's id, which stays unique
platform-wide and can be distributed by tenant

Revision ID: 6d2e8b40c1a9
Revises: 3f9c2a71d5e8
Create Date: 2026-12-01 11:10:00.000000+00:00

A unique constraint on `number` alone cannot exist on a table distributed by tenant_id (Citus
refuses constraints without the distribution column). Numbers are upper(tenant_id) || '-' ||
counter and tenant ids are lowercase, so (tenant_id, number) unique plus a CHECK that the
number starts with its tenant's prefix is the same guarantee: two tenants' numbers differ in
their prefix.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "6d2e8b40c1a9"
down_revision: str | None = "3f9c2a71d5e8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREFIX_CHECK = "left(number, length(tenant_id) + 1) = upper(tenant_id) || '-'"


def upgrade() -> None:
    op.create_check_constraint(op.f("ck_invoices_number_prefix"), "invoices", PREFIX_CHECK)
    op.create_unique_constraint(
        op.f("uq_invoices_tenant_id_number"), "invoices", ["tenant_id", "number"]
    )
    op.drop_constraint(op.f("uq_invoices_number"), "invoices", type_="unique")


def downgrade() -> None:
    op.create_unique_constraint(op.f("uq_invoices_number"), "invoices", ["number"])
    op.drop_constraint(op.f("uq_invoices_tenant_id_number"), "invoices", type_="unique")
    op.drop_constraint(op.f("ck_invoices_number_prefix"), "invoices", type_="check")
