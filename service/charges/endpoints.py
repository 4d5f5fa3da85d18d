from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from service.charges.schemas import (
    ChargeCreate,
    ChargeEnd,
    ChargeOut,
    CommitmentCreate,
    CommitmentEnd,
    CommitmentOut,
)
from service.charges.service import ChargeService, CommitmentService
from service.common.auth import Scope, current_principal, requires
from service.common.page_parameters import PAGE, PageParameters
from service.common.schemas import Page

ADMIN = requires(Scope.ADMIN)
ADMIN_OR_BILLING = requires(Scope.ADMIN, Scope.BILLING)


class TenantChargeController(Controller):
    path = "/v1/tenants/{tenant_id:str}/charges"
    tags = ["charges"]
    dependencies = {"page": PAGE}

    @post(
        "/",
        summary="Create a recurring charge (a platform fee, seats)",
        description="Billed on every monthly invoice it is effective in, prorated by the share "
        "of the month's seconds in the tenant's time zone (unless prorate is false).",
        guards=[ADMIN],
    )
    async def create_charge(
        self,
        tenant_id: str,
        data: ChargeCreate,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
    ) -> ChargeOut:
        return await ChargeService(db_session).create(tenant_id, data, current_principal(request))

    @get("/", summary="List a tenant's recurring charges", guards=[ADMIN_OR_BILLING])
    async def list_charges(
        self,
        tenant_id: str,
        page: PageParameters,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
    ) -> Page[ChargeOut]:
        return await ChargeService(db_session).list(
            tenant_id, page.cursor, page.limit, current_principal(request)
        )

    @post(
        "/{charge_id:uuid}/end",
        summary="End a recurring charge (or move its end)",
        status_code=200,
        guards=[ADMIN],
    )
    async def end_charge(
        self,
        tenant_id: str,
        charge_id: uuid.UUID,
        data: ChargeEnd,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
    ) -> ChargeOut:
        return await ChargeService(db_session).end(
            tenant_id, charge_id, data, current_principal(request)
        )


class TenantCommitmentController(Controller):
    path = "/v1/tenants/{tenant_id:str}/commitments"
    tags = ["charges"]
    dependencies = {"page": PAGE}

    @post(
        "/",
        summary="Create a commitment (a monthly minimum spend in one currency)",
        description="A month whose usage, minimum and charge lines in the currency add up to "
        "less than the commitment (prorated by the share of the month it covers) gets a "
        "commitment line for the difference. 409 (commitment_overlap) when another commitment "
        "of the tenant in that currency covers part of the same time.",
        guards=[ADMIN],
    )
    async def create_commitment(
        self,
        tenant_id: str,
        data: CommitmentCreate,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
    ) -> CommitmentOut:
        return await CommitmentService(db_session).create(
            tenant_id, data, current_principal(request)
        )

    @get("/", summary="List a tenant's commitments", guards=[ADMIN_OR_BILLING])
    async def list_commitments(
        self,
        tenant_id: str,
        page: PageParameters,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
    ) -> Page[CommitmentOut]:
        return await CommitmentService(db_session).list(
            tenant_id, page.cursor, page.limit, current_principal(request)
        )

    @post(
        "/{commitment_id:uuid}/end",
        summary="End a commitment (or move its end)",
        status_code=200,
        guards=[ADMIN],
    )
    async def end_commitment(
        self,
        tenant_id: str,
        commitment_id: uuid.UUID,
        data: CommitmentEnd,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
    ) -> CommitmentOut:
        return await CommitmentService(db_session).end(
            tenant_id, commitment_id, data, current_principal(request)
        )
