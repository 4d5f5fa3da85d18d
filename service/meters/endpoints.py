from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, patch, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Scope, current_principal, requires
from service.common.schemas import DEFAULT_LIMIT, Limit, Page
from service.meters.schemas import (
    LlmPresetIn,
    LlmPresetOut,
    LlmPriceImport,
    LlmPriceImportOut,
    MeterCreate,
    MeterOut,
    MeterStatus,
    MeterUpdate,
    PriceCreate,
    PriceEnd,
    PriceOut,
)
from service.meters.service import MeterService, PriceService

ADMIN = requires(Scope.ADMIN)
# Meters are platform-wide reference data: any key may read them (admin passes every guard).
ANY_SCOPE = requires(Scope.INGEST, Scope.READ, Scope.BILLING)
ADMIN_OR_BILLING = requires(Scope.BILLING)


class MeterController(Controller):
    path = "/v1/meters"
    tags = ["meters"]

    @post("/", summary="Create a meter", guards=[ADMIN])
    async def create_meter(self, data: MeterCreate, db_session: AsyncSession) -> MeterOut:
        return await MeterService(db_session).create(data)

    @post(
        "/presets/llm",
        summary="Create the LLM meters that are missing (idempotent); answers all of them",
        guards=[ADMIN],
        status_code=200,
    )
    async def apply_llm_preset(self, data: LlmPresetIn, db_session: AsyncSession) -> LlmPresetOut:
        return await MeterService(db_session).apply_llm_preset(data.currency)

    @get("/", summary="List meters", guards=[ANY_SCOPE])
    async def list_meters(
        self,
        db_session: AsyncSession,
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        status: MeterStatus | None = Parameter(default=None, query="status"),
    ) -> Page[MeterOut]:
        return await MeterService(db_session).list(cursor, limit, status)

    @get("/{event_name:str}", summary="Get a meter (archived ones too)", guards=[ANY_SCOPE])
    async def get_meter(self, event_name: str, db_session: AsyncSession) -> MeterOut:
        return await MeterService(db_session).get(event_name)

    @patch("/{event_name:str}", summary="Update a meter", guards=[ADMIN])
    async def update_meter(
        self, event_name: str, data: MeterUpdate, db_session: AsyncSession
    ) -> MeterOut:
        return await MeterService(db_session).update(event_name, data)

    @post(
        "/{event_name:str}/archive",
        summary="Archive a meter (idempotent; history stays billable)",
        guards=[ADMIN],
        status_code=200,
    )
    async def archive_meter(self, event_name: str, db_session: AsyncSession) -> MeterOut:
        return await MeterService(db_session).archive(event_name)


class PriceController(Controller):
    path = "/v1/prices"
    tags = ["prices"]

    @post("/", summary="Create a price", guards=[ADMIN])
    async def create_price(self, data: PriceCreate, db_session: AsyncSession) -> PriceOut:
        return await PriceService(db_session).create(data)

    @post(
        "/import/llm",
        summary="Create per-model LLM prices per 1,000,000 tokens from the bundled catalog",
        guards=[ADMIN],
        status_code=201,
    )
    async def import_llm_prices(
        self, data: LlmPriceImport, db_session: AsyncSession
    ) -> LlmPriceImportOut:
        return await PriceService(db_session).import_llm(data)

    @get("/", summary="List prices", guards=[ADMIN_OR_BILLING])
    async def list_prices(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        meter: str | None = Parameter(default=None, query="meter", description="event_name"),
        tenant_id: str | None = Parameter(
            default=None, query="tenant_id", description="only this tenant's overrides"
        ),
    ) -> Page[PriceOut]:
        return await PriceService(db_session).list(
            cursor,
            limit,
            meter=meter,
            tenant_id=tenant_id,
            principal=current_principal(request),
        )

    @get("/{price_id:uuid}", summary="Get a price", guards=[ADMIN_OR_BILLING])
    async def get_price(
        self, price_id: uuid.UUID, request: Request[Any, Any, Any], db_session: AsyncSession
    ) -> PriceOut:
        return await PriceService(db_session).get(price_id, current_principal(request))

    @post(
        "/{price_id:uuid}/end",
        summary="End a price at effective_to",
        guards=[ADMIN],
        status_code=200,
    )
    async def end_price(
        self, price_id: uuid.UUID, data: PriceEnd, db_session: AsyncSession
    ) -> PriceOut:
        return await PriceService(db_session).end(price_id, data)
