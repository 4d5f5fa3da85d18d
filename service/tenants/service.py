"""Tenant and API key rules. Services never commit: the request's session does."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from service.common.auth import Principal, Scope
from service.common.errors import Conflict, FieldError, InvalidInput, NotFound
from service.common.money import is_currency
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.settings import Settings
from service.tenants.auth import generate_key
from service.tenants.models import ApiKey, Tenant
from service.tenants.repository import ApiKeyRepository, TenantRepository
from service.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)


def validate_timezone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(
            f"'{name}' is not an IANA time zone (e.g. 'Europe/Berlin')",
            errors=[FieldError(field=field, message="unknown IANA time zone")],
        ) from exc


def _validate_currency(code: str) -> None:
    if not is_currency(code):
        raise InvalidInput(
            f"'{code}' is not an ISO 4217 currency code",
            errors=[FieldError(field="currency", message="unknown ISO 4217 currency")],
        )


def _validate_retention(days: int | None, settings: Settings) -> None:
    if days is not None and days < settings.late_arrival_days:
        raise InvalidInput(
            f"retention_days ({days}) must be at least the late-arrival window "
            f"({settings.late_arrival_days} days), or a re-sent event could be counted twice",
            errors=[FieldError(field="retention_days", message="shorter than late-arrival window")],
        )


def tenant_out(tenant: Tenant) -> TenantOut:
    return TenantOut(
        id=tenant.id,
        name=tenant.name,
        currency=tenant.currency,
        timezone=tenant.timezone,
        retention_days=tenant.retention_days,
        status=tenant.status,
        created_at=tenant.created_at,
        updated_at=tenant.updated_at,
    )


class TenantService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.tenants = TenantRepository(session)
        self.settings = settings

    async def create(self, data: TenantCreate) -> TenantOut:
        _validate_currency(data.currency)
        validate_timezone(data.timezone)
        _validate_retention(data.retention_days, self.settings)
        if await self.tenants.get(data.id) is not None:
            raise Conflict(f"tenant '{data.id}' already exists")
        tenant = await self.tenants.add(
            Tenant(
                id=data.id,
                name=data.name,
                currency=data.currency,
                timezone=data.timezone,
                retention_days=data.retention_days,
                status=data.status,
            )
        )
        return tenant_out(tenant)

    async def require(self, tenant_id: str) -> Tenant:
        tenant = await self.tenants.get(tenant_id)
        if tenant is None:
            raise NotFound(f"tenant '{tenant_id}' does not exist")
        return tenant

    async def get(self, tenant_id: str) -> TenantOut:
        return tenant_out(await self.require(tenant_id))

    async def list(self, cursor: str | None, limit: int) -> Page[TenantOut]:
        after = decode_cursor(cursor, 1)[0] if cursor else None
        rows = await self.tenants.list_after(after, limit + 1)
        items = [tenant_out(t) for t in rows[:limit]]
        next_cursor = encode_cursor([items[-1].id]) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def update(self, tenant_id: str, data: TenantUpdate) -> TenantOut:
        tenant = await self.require(tenant_id)
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if "currency" in changes:
            _validate_currency(changes["currency"])
        if "timezone" in changes:
            validate_timezone(changes["timezone"])
        if "retention_days" in changes:
            _validate_retention(changes["retention_days"], self.settings)
        if changes:
            tenant = await self.tenants.update(tenant, changes)
        return tenant_out(tenant)


def api_key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        scopes=list(key.scopes),
        tenant_id=key.tenant_id,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


class ApiKeyService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.keys = ApiKeyRepository(session)
        self.tenants = TenantRepository(session)
        self.settings = settings

    async def create(self, data: ApiKeyCreate) -> ApiKeyCreated:
        scopes = sorted(set(data.scopes))
        if data.tenant_id is not None:
            if Scope.ADMIN in scopes:
                raise InvalidInput(
                    "an admin key manages the whole platform and cannot be bound to a tenant",
                    errors=[FieldError(field="scopes", message="admin with tenant_id")],
                )
            if await self.tenants.get(data.tenant_id) is None:
                raise InvalidInput(
                    f"tenant '{data.tenant_id}' does not exist",
                    errors=[FieldError(field="tenant_id", message="unknown tenant")],
                )
        new = generate_key(self.settings.secret_key)
        key = await self.keys.add(
            ApiKey(
                id=uuid.uuid4(),
                name=data.name,
                prefix=new.prefix,
                key_hash=new.key_hash,
                scopes=scopes,
                tenant_id=data.tenant_id,
            )
        )
        return ApiKeyCreated(
            id=key.id,
            key=new.plaintext,
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            tenant_id=key.tenant_id,
            created_at=key.created_at,
        )

    async def list(self, cursor: str | None, limit: int, tenant_id: str | None) -> Page[ApiKeyOut]:
        after = None
        if cursor:
            created, key_id = decode_cursor(cursor, 2)
            try:
                after = (datetime.fromisoformat(created), uuid.UUID(key_id))
            except (TypeError, ValueError) as exc:
                raise InvalidInput("cursor is not one this API returned") from exc
        rows = await self.keys.list_after(after, limit + 1, tenant_id)
        items = [api_key_out(k) for k in rows[:limit]]
        next_cursor = (
            encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    async def revoke(self, key_id: uuid.UUID, principal: Principal) -> None:
        if str(key_id) == principal.key_id:
            raise Conflict("a key cannot revoke itself; use another admin key")
        if await self.keys.get(key_id) is None:
            raise NotFound(f"API key '{key_id}' does not exist")
        await self.keys.revoke(key_id)
