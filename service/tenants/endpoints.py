from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Scope, current_principal, requires
from service.common.schemas import DEFAULT_LIMIT, Limit, Page
from service.settings import Settings
from service.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)
from service.tenants.service import ApiKeyService, TenantService


class TenantController(Controller):
    path = "/v1/tenants"
    tags = ["tenants"]
    guards = [requires(Scope.ADMIN)]

    @post("/", summary="Create a tenant")
    async def create_tenant(
        self, data: TenantCreate, db_session: AsyncSession, settings: Settings
    ) -> TenantOut:
        return await TenantService(db_session, settings).create(data)

    @get("/", summary="List tenants")
    async def list_tenants(
        self,
        db_session: AsyncSession,
        settings: Settings,
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[TenantOut]:
        return await TenantService(db_session, settings).list(cursor, limit)

    @get("/{tenant_id:str}", summary="Get a tenant")
    async def get_tenant(
        self, tenant_id: str, db_session: AsyncSession, settings: Settings
    ) -> TenantOut:
        return await TenantService(db_session, settings).get(tenant_id)

    @patch("/{tenant_id:str}", summary="Update a tenant")
    async def update_tenant(
        self, tenant_id: str, data: TenantUpdate, db_session: AsyncSession, settings: Settings
    ) -> TenantOut:
        return await TenantService(db_session, settings).update(tenant_id, data)


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api-keys"]
    guards = [requires(Scope.ADMIN)]

    @post("/", summary="Create an API key (the key is shown once)")
    async def create_api_key(
        self, data: ApiKeyCreate, db_session: AsyncSession, settings: Settings
    ) -> ApiKeyCreated:
        return await ApiKeyService(db_session, settings).create(data)

    @get("/", summary="List API keys (never the keys themselves)")
    async def list_api_keys(
        self,
        db_session: AsyncSession,
        settings: Settings,
        cursor: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
    ) -> Page[ApiKeyOut]:
        return await ApiKeyService(db_session, settings).list(cursor, limit, tenant_id)

    @delete("/{key_id:uuid}", summary="Revoke an API key", status_code=204)
    async def revoke_api_key(
        self,
        key_id: uuid.UUID,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        settings: Settings,
    ) -> None:
        verifier = request.app.state.key_verifier
        await ApiKeyService(db_session, settings).revoke(key_id, current_principal(request))
        verifier.forget()
