"""Webhook endpoints and their deliveries (the admin API). Services never commit."""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from service.common.errors import FieldError, InvalidInput, NotFound
from service.common.schemas import Page, decode_cursor, encode_cursor
from service.settings import Settings
from service.tenants.repository import TenantRepository
from service.webhooks.addresses import AddressRefused, check_receiver
from service.webhooks.models import WebhookDelivery, WebhookEndpoint
from service.webhooks.repository import WebhookRepository
from service.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
)


def new_secret() -> str:
    """A Standard Webhooks signing secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        tenant_id=endpoint.tenant_id,
        created_at=endpoint.created_at,
    )


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        tenant_id=delivery.tenant_id,
        type=delivery.type,
        status=delivery.status,  # type: ignore[arg-type]
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        delivered_at=delivery.delivered_at,
        attempts=[
            AttemptOut(
                at=datetime.fromisoformat(attempt["at"]),
                status_code=attempt.get("status_code"),
                latency_ms=attempt["latency_ms"],
                error=attempt.get("error"),
            )
            for attempt in delivery.attempts
        ],
    )


def _cursor_after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    created, row_id = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            "cursor is not one this API returned",
            errors=[FieldError(field="cursor", message="not one this API returned")],
        ) from exc


class WebhookService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.webhooks = WebhookRepository(session)
        self.tenants = TenantRepository(session)
        self.settings = settings

    async def create(self, data: EndpointCreate) -> EndpointCreated:
        try:
            await check_receiver(data.url, allow_private=self.settings.webhook_allow_private)
        except AddressRefused as exc:
            raise InvalidInput(
                f"url {exc}", errors=[FieldError(field="url", message=str(exc))]
            ) from exc
        if data.tenant_id is not None and await self.tenants.get(data.tenant_id) is None:
            raise InvalidInput(
                f"tenant '{data.tenant_id}' does not exist",
                errors=[FieldError(field="tenant_id", message="unknown tenant")],
            )
        endpoint = await self.webhooks.add_endpoint(
            WebhookEndpoint(
                id=uuid.uuid4(),
                url=data.url,
                event_types=sorted(set(data.event_types)),
                description=data.description,
                tenant_id=data.tenant_id,
                secret=new_secret(),
            )
        )
        out = endpoint_out(endpoint)
        return EndpointCreated(
            id=out.id,
            url=out.url,
            event_types=out.event_types,
            description=out.description,
            tenant_id=out.tenant_id,
            created_at=out.created_at,
            secret=endpoint.secret,
        )

    async def _endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        endpoint = await self.webhooks.get_endpoint(endpoint_id)
        if endpoint is None:
            raise NotFound(f"webhook endpoint '{endpoint_id}' does not exist")
        return endpoint

    async def get(self, endpoint_id: uuid.UUID) -> EndpointOut:
        return endpoint_out(await self._endpoint(endpoint_id))

    async def list(
        self, cursor: str | None, limit: int, tenant_id: str | None
    ) -> Page[EndpointOut]:
        rows = await self.webhooks.list_endpoints_after(_cursor_after(cursor), limit + 1, tenant_id)
        items = [endpoint_out(row) for row in rows[:limit]]
        next_cursor = (
            encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        if not await self.webhooks.delete_endpoint(endpoint_id):
            raise NotFound(f"webhook endpoint '{endpoint_id}' does not exist")

    async def deliveries(
        self, endpoint_id: uuid.UUID, cursor: str | None, limit: int, status: str | None
    ) -> Page[DeliveryOut]:
        await self._endpoint(endpoint_id)
        rows = await self.webhooks.list_deliveries_before(
            endpoint_id, _cursor_after(cursor), limit + 1, status
        )
        items = [delivery_out(row) for row in rows[:limit]]
        next_cursor = (
            encode_cursor([items[-1].created_at.isoformat(), str(items[-1].id)])
            if len(rows) > limit
            else None
        )
        return Page(items=items, next_cursor=next_cursor)

    async def retry(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> DeliveryOut:
        await self._endpoint(endpoint_id)
        delivery = await self.webhooks.get_delivery(endpoint_id, delivery_id)
        if delivery is None:
            raise NotFound(
                f"delivery '{delivery_id}' of webhook endpoint '{endpoint_id}' does not exist"
            )
        return delivery_out(await self.webhooks.schedule_now(delivery))
