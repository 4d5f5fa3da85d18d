"""All SQL of webhook endpoints and deliveries, except the sender's claim (sender.py) and the
outbox insert (outbox.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.webhooks.models import WebhookDelivery, WebhookEndpoint


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_endpoint(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        self.session.add(endpoint)
        await self.session.flush()
        await self.session.refresh(endpoint)
        return endpoint

    async def get_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        return await self.session.get(WebhookEndpoint, endpoint_id)

    async def list_endpoints_after(
        self, after: tuple[datetime, uuid.UUID] | None, limit: int, tenant_id: str | None
    ) -> Sequence[WebhookEndpoint]:
        query = (
            select(WebhookEndpoint)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                tuple_(WebhookEndpoint.created_at, WebhookEndpoint.id) > tuple_(*after)
            )
        if tenant_id is not None:
            query = query.where(WebhookEndpoint.tenant_id == tenant_id)
        return (await self.session.scalars(query)).all()

    async def delete_endpoint(self, endpoint_id: uuid.UUID) -> bool:
        """Deletes its deliveries too (pending ones are never sent)."""
        result = await self.session.execute(
            delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list_deliveries_before(
        self,
        endpoint_id: uuid.UUID,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
        status: str | None,
    ) -> Sequence[WebhookDelivery]:
        """Newest first."""
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(
                tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(*before)
            )
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return (await self.session.scalars(query)).all()

    async def get_delivery(
        self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> WebhookDelivery | None:
        return (
            await self.session.scalars(
                select(WebhookDelivery).where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id
                )
            )
        ).one_or_none()

    async def schedule_now(self, delivery: WebhookDelivery) -> WebhookDelivery:
        """Due again at once, whatever its status; its attempts so far stay listed. Waits for
        a sender posting it right now (its row lock), so the two never overlap."""
        await self.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.tenant_id == delivery.tenant_id,
                WebhookDelivery.id == delivery.id,
            )
            .values(status="pending", next_attempt_at=func.now())
        )
        await self.session.refresh(delivery)
        return delivery
