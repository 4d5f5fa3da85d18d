from __future__ import annotations

import uuid
from typing import Literal

from litestar import Controller, delete, get, post
from litestar.params import Parameter

from service.common.auth import Scope, requires
from service.common.page_parameters import PAGE, PageParameters
from service.common.schemas import Page
from service.common.services import provide_service
from service.webhooks.schemas import DeliveryOut, EndpointCreate, EndpointCreated, EndpointOut
from service.webhooks.service import WebhookService


class WebhookEndpointController(Controller):
    path = "/v1/webhook-endpoints"
    tags = ["webhooks"]
    guards = [requires(Scope.ADMIN)]
    dependencies = {"page": PAGE, "webhooks": provide_service(WebhookService)}

    @post(
        "/",
        summary="Register a webhook endpoint (its signing secret is shown once)",
        description="Event types: budget.threshold_reached, invoice.finalized, invoice.voided. "
        "Messages are signed per the Standard Webhooks specification with the returned "
        "`secret`. Without `tenant_id` the endpoint receives every tenant's events. URLs "
        "resolving to private, loopback or link-local addresses are refused (422) unless "
        "METERING_WEBHOOK_ALLOW_PRIVATE=true.",
    )
    async def create_webhook_endpoint(
        self, data: EndpointCreate, webhooks: WebhookService
    ) -> EndpointCreated:
        return await webhooks.create(data)

    @get("/", summary="List webhook endpoints (never their secrets)")
    async def list_webhook_endpoints(
        self,
        page: PageParameters,
        webhooks: WebhookService,
        tenant_id: str | None = Parameter(default=None, query="tenant_id"),
    ) -> Page[EndpointOut]:
        return await webhooks.list(page.cursor, page.limit, tenant_id)

    @get("/{endpoint_id:uuid}", summary="Get a webhook endpoint")
    async def get_webhook_endpoint(
        self, endpoint_id: uuid.UUID, webhooks: WebhookService
    ) -> EndpointOut:
        return await webhooks.get(endpoint_id)

    @delete(
        "/{endpoint_id:uuid}",
        summary="Delete a webhook endpoint (and its deliveries)",
        status_code=204,
    )
    async def delete_webhook_endpoint(
        self, endpoint_id: uuid.UUID, webhooks: WebhookService
    ) -> None:
        await webhooks.delete(endpoint_id)

    @get(
        "/{endpoint_id:uuid}/deliveries",
        summary="List an endpoint's messages, newest first, with every attempt",
        description="`id` is the webhook-id header of every attempt; `status` is pending, "
        "delivered or failed (retries ran out); `next_attempt_at` is set while pending.",
    )
    async def list_webhook_deliveries(
        self,
        endpoint_id: uuid.UUID,
        page: PageParameters,
        webhooks: WebhookService,
        status: Literal["pending", "delivered", "failed"] | None = Parameter(
            default=None, query="status"
        ),
    ) -> Page[DeliveryOut]:
        return await webhooks.deliveries(endpoint_id, page.cursor, page.limit, status)

    @post(
        "/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/retry",
        summary="Send a delivery again now (also a delivered or failed one)",
        status_code=202,
    )
    async def retry_webhook_delivery(
        self,
        endpoint_id: uuid.UUID,
        delivery_id: uuid.UUID,
        webhooks: WebhookService,
    ) -> DeliveryOut:
        return await webhooks.retry(endpoint_id, delivery_id)
