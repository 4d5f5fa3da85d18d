"""The record methods both trackers share: they build the event (its idempotency key included)
and hand it to the tracker's `_submit`, which returns the key (Tracker) or an awaitable of it
(AsyncTracker)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from metering_client._events import (
    DimensionValue,
    Event,
    EventFactory,
    Quantity,
    llm_dimensions,
    llm_values,
)

R = TypeVar("R")


class Recording(Generic[R]):
    _events: EventFactory

    def _submit(self, event: Event) -> R:
        raise NotImplementedError

    def record(
        self,
        event_name: str,
        value: Quantity | None = None,
        *,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
        timestamp: datetime | None = None,
        org_id: str | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        dimensions: Mapping[str, DimensionValue] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
        """Buffer one event of meter `event_name` (`value` may be left out for a count
        meter); the result is its idempotency key (made now: a UUIDv7, unless given)."""
        if not event_name:
            raise ValueError("event_name is required")
        return self._submit(
            self._events.event(
                event_name,
                value,
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                timestamp=timestamp,
                org_id=org_id,
                project_id=project_id,
                api_key_id=api_key_id,
                user_id=user_id,
                model=model,
                dimensions=dimensions,
                metadata=metadata,
            )
        )

    def record_values(
        self,
        values: Mapping[str, Quantity | None],
        *,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
        timestamp: datetime | None = None,
        org_id: str | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        user_id: str | None = None,
        model: str | None = None,
        dimensions: Mapping[str, DimensionValue] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
        """Buffer one event carrying several meters' quantities (`{meter: quantity}`, `None`
        for a count meter), stored or refused as a whole under one idempotency key."""
        if not values:
            raise ValueError("values needs at least one meter's quantity")
        return self._submit(
            self._events.event(
                values=values,
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                timestamp=timestamp,
                org_id=org_id,
                project_id=project_id,
                api_key_id=api_key_id,
                user_id=user_id,
                model=model,
                dimensions=dimensions,
                metadata=metadata,
            )
        )

    def record_llm_call(
        self,
        provider: str | None,
        model: str,
        requested_model: str | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_write_5m_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        cache_read_tokens: int = 0,
        streamed: bool | None = None,
        status: str = "success",
        error_code: str | None = None,
        latency_ms: Quantity | None = None,
        ttft_ms: Quantity | None = None,
        user_tier: str | None = None,
        operation: str | None = None,
        tenant_id: str | None = None,
        idempotency_key: str | None = None,
        timestamp: datetime | None = None,
        org_id: str | None = None,
        project_id: str | None = None,
        api_key_id: str | None = None,
        user_id: str | None = None,
        dimensions: Mapping[str, DimensionValue] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
        """Buffer one LLM call as one `values` event on the LLM preset's meters
        (`llm_requests`, the token meters, `latency_ms`, `ttft_ms`). `model` is the model
        that answered, `requested_model` the one asked for; `provider`, `requested_model`,
        `operation`, `status` (`success` | `error` | `canceled`), `error_code`, `streamed` and
        `user_tier` become dimensions, beside any extra `dimensions` given."""
        return self._submit(
            self._events.event(
                values=llm_values(
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_write_5m_tokens=cache_write_5m_tokens,
                    cache_write_1h_tokens=cache_write_1h_tokens,
                    cache_read_tokens=cache_read_tokens,
                    latency_ms=latency_ms,
                    ttft_ms=ttft_ms,
                ),
                tenant_id=tenant_id,
                idempotency_key=idempotency_key,
                timestamp=timestamp,
                org_id=org_id,
                project_id=project_id,
                api_key_id=api_key_id,
                user_id=user_id,
                model=model,
                dimensions=llm_dimensions(
                    provider=provider,
                    requested_model=requested_model,
                    operation=operation,
                    status=status,
                    error_code=error_code,
                    streamed=streamed,
                    user_tier=user_tier,
                    extra=dimensions,
                ),
                metadata=metadata,
            )
        )
