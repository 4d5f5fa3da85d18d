from __future__ import annotations

import uuid
from typing import Any, Literal, cast

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Scope, current_principal, requires
from service.common.schemas import DEFAULT_LIMIT, Limit, Page
from service.invoices.export import csv_filename, invoice_csv
from service.invoices.schemas import FinalizeRequest, InvoiceOut
from service.invoices.service import InvoiceService, decode_document
from service.settings import Settings

BILLING = requires(Scope.BILLING)
CSV = "text/csv"


class TenantInvoiceController(Controller):
    path = "/v1/tenants/{tenant_id:str}/invoices"
    tags = ["invoices"]
    guards = [BILLING]

    @get(
        "/preview",
        summary="Preview a period's invoices (drafts, one per currency, not stored)",
    )
    async def preview_invoices(
        self,
        tenant_id: str,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        period: str = Parameter(query="period", description="YYYY-MM in the tenant's time zone"),
    ) -> list[InvoiceOut]:
        return await InvoiceService(db_session, settings).preview(
            tenant_id, period, current_principal(request)
        )

    @post(
        "/",
        summary="Finalize a period's invoices (one per currency)",
        description="201 with the finalized invoices; 409 (invoice_exists) when the period is "
        "already finalized; 409 (period_overlaps) when its instants would overlap a finalized "
        "invoice; 422 (period_not_ended) before the period has ended.",
    )
    async def finalize_invoices(
        self,
        tenant_id: str,
        data: FinalizeRequest,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> list[InvoiceOut]:
        return await InvoiceService(db_session, settings).finalize(
            tenant_id, data.period, current_principal(request)
        )


class InvoiceController(Controller):
    path = "/v1/invoices"
    tags = ["invoices"]
    guards = [BILLING]

    @get("/", summary="List finalized and void invoices")
    async def list_invoices(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
        status: Literal["finalized", "void"] | None = Parameter(default=None, query="status"),
        period: str | None = Parameter(default=None, query="period", description="YYYY-MM"),
    ) -> Page[InvoiceOut]:
        return await InvoiceService(db_session, settings).list(
            cursor,
            limit,
            tenant_id=tenant_id,
            status=status,
            period=period,
            principal=current_principal(request),
        )

    @get(
        "/{invoice_id:uuid}",
        summary="Get an invoice (JSON, or CSV with Accept: text/csv)",
        description="The JSON is the document stored at finalization, byte for byte.",
    )
    async def get_invoice(
        self,
        invoice_id: uuid.UUID,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> Response[InvoiceOut]:
        document = await InvoiceService(db_session, settings).document(
            invoice_id, current_principal(request)
        )
        if request.accept.best_match([MediaType.JSON, CSV], default=MediaType.JSON) == CSV:
            invoice = decode_document(document)
            return Response(
                cast(InvoiceOut, invoice_csv(invoice)),
                media_type=CSV,  # Litestar adds "; charset=utf-8"
                headers={"Content-Disposition": f'attachment; filename="{csv_filename(invoice)}"'},
            )
        # The stored bytes, not a re-encoding: a finalized invoice never changes.
        return Response(cast(InvoiceOut, document.encode()), media_type=MediaType.JSON)

    @post("/{invoice_id:uuid}/void", summary="Void an invoice", status_code=200)
    async def void_invoice(
        self,
        invoice_id: uuid.UUID,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> InvoiceOut:
        return await InvoiceService(db_session, settings).void(
            invoice_id, current_principal(request)
        )
