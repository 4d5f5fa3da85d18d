"""All SQL for tenants and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.tenants.models import ApiKey, Tenant


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, tenant_id: str) -> Tenant | None:
        return await self.session.get(Tenant, tenant_id)

    async def add(self, tenant: Tenant) -> Tenant:
        self.session.add(tenant)
        await self.session.flush()
        await self.session.refresh(tenant)
        return tenant

    async def list_after(self, after_id: str | None, limit: int) -> Sequence[Tenant]:
        query = select(Tenant).order_by(Tenant.id).limit(limit)
        if after_id is not None:
            query = query.where(Tenant.id > after_id)
        return (await self.session.scalars(query)).all()

    async def update(self, tenant: Tenant, changes: dict[str, Any]) -> Tenant:
        for key, value in changes.items():
            setattr(tenant, key, value)
        tenant.updated_at = func.now()  # type: ignore[assignment]
        await self.session.flush()
        await self.session.refresh(tenant)
        return tenant


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, key: ApiKey) -> ApiKey:
        self.session.add(key)
        await self.session.flush()
        await self.session.refresh(key)
        return key

    async def get(self, key_id: uuid.UUID) -> ApiKey | None:
        return await self.session.get(ApiKey, key_id)

    async def list_after(
        self, after: tuple[datetime, uuid.UUID] | None, limit: int, tenant_id: str | None
    ) -> Sequence[ApiKey]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(ApiKey.created_at, ApiKey.id) > tuple_(*after))
        if tenant_id is not None:
            query = query.where(ApiKey.tenant_id == tenant_id)
        return (await self.session.scalars(query)).all()

    async def revoke(self, key_id: uuid.UUID) -> bool:
        result = await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=func.now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
