from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import Parameter

from service.common.auth import Scope, current_principal, requires
from service.common.page_parameters import PAGE, PageParameters
from service.common.schemas import Page
from service.common.services import provide_service
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
    dependencies = {"page": PAGE, "tenants": provide_service(TenantService)}

    @post("/", summary="Create a tenant")
    async def create_tenant(self, data: TenantCreate, tenants: TenantService) -> TenantOut:
        return await tenants.create(data)

    @get("/", summary="List tenants")
    async def list_tenants(self, page: PageParameters, tenants: TenantService) -> Page[TenantOut]:
        return await tenants.list(page.cursor, page.limit)

    @get("/{tenant_id:str}", summary="Get a tenant")
    async def get_tenant(self, tenant_id: str, tenants: TenantService) -> TenantOut:
        return await tenants.get(tenant_id)

    @patch("/{tenant_id:str}", summary="Update a tenant")
    async def update_tenant(
        self, tenant_id: str, data: TenantUpdate, tenants: TenantService
    ) -> TenantOut:
        return await tenants.update(tenant_id, data)


class ApiKeyController(Controller):
    path = "/v1/api-keys"
    tags = ["api-keys"]
    guards = [requires(Scope.ADMIN)]
    dependencies = {"page": PAGE, "keys": provide_service(ApiKeyService)}

    @post("/", summary="Create an API key (the key is shown once)")
    async def create_api_key(self, data: ApiKeyCreate, keys: ApiKeyService) -> ApiKeyCreated:
        return await keys.create(data)

    @get("/", summary="List API keys (never the keys themselves)")
    async def list_api_keys(
        self,
        page: PageParameters,
        keys: ApiKeyService,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
    ) -> Page[ApiKeyOut]:
        return await keys.list(page.cursor, page.limit, tenant_id)

    @delete("/{key_id:uuid}", summary="Revoke an API key", status_code=204)
    async def revoke_api_key(
        self, key_id: uuid.UUID, request: Request[Any, Any, Any], keys: ApiKeyService
    ) -> None:
        verifier = request.app.state.key_verifier
        await keys.revoke(key_id, current_principal(request))
        verifier.forget()
