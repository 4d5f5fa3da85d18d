"""In-process views of tenants and meters for the hot path, refreshed every few seconds so
ingestion does not query them per event. A suspension or an archived meter takes effect
within `reference_cache_seconds`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.meters.models import Meter
from service.tenants.models import Tenant


@dataclass(frozen=True, slots=True)
class MeterView:
    id: int
    event_name: str
    aggregation: str
    dimensions: frozenset[str]
    status: str
    has_events: bool
    # sum meters only: negative values (refunds, credits) are accepted.
    allow_negative: bool = False
    # The OpenTelemetry metric that feeds the meter, and the attributes its points must carry.
    otel_metric: str | None = None
    otel_attributes: tuple[tuple[str, str], ...] = ()


def _otel_fields(otel: Mapping[str, Any] | None) -> dict[str, Any]:
    if not otel:
        return {}
    return {
        "otel_metric": otel["metric"],
        "otel_attributes": tuple(sorted(otel.get("attributes", {}).items())),
    }


@dataclass(frozen=True, slots=True)
class TenantView:
    id: str
    status: str


class ReferenceCache:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl_seconds
        self._clock = clock
        self._meters: dict[str, MeterView] = {}
        self._meters_expire = 0.0
        self._tenants: dict[str, tuple[float, TenantView | None]] = {}

    async def meters(self) -> dict[str, MeterView]:
        now = self._clock()
        if now >= self._meters_expire:
            async with self._sessionmaker() as session:
                rows = (await session.scalars(select(Meter))).all()
            # Equal dimension sets share one object: validation compares them by identity first.
            interned: dict[frozenset[str], frozenset[str]] = {}
            self._meters = {
                m.event_name: MeterView(
                    id=m.id,
                    event_name=m.event_name,
                    aggregation=m.aggregation,
                    dimensions=interned.setdefault(
                        frozenset(m.dimensions), frozenset(m.dimensions)
                    ),
                    status=m.status,
                    has_events=m.has_events,
                    allow_negative=m.allow_negative,
                    **_otel_fields(m.otel),
                )
                for m in rows
            }
            self._meters_expire = now + self._ttl
        return self._meters

    async def tenants(self, tenant_ids: set[str]) -> dict[str, TenantView | None]:
        now = self._clock()
        result: dict[str, TenantView | None] = {}
        missing: list[str] = []
        for tenant_id in tenant_ids:
            cached = self._tenants.get(tenant_id)
            if cached is not None and cached[0] > now:
                result[tenant_id] = cached[1]
            else:
                missing.append(tenant_id)
        if missing:
            async with self._sessionmaker() as session:
                rows = (await session.scalars(select(Tenant).where(Tenant.id.in_(missing)))).all()
            found = {t.id: TenantView(id=t.id, status=t.status) for t in rows}
            if len(self._tenants) > 100_000:
                self._tenants.clear()
            for tenant_id in missing:
                view = found.get(tenant_id)
                self._tenants[tenant_id] = (now + self._ttl, view)
                result[tenant_id] = view
        return result

    def note_meters_used(self, meter_ids: set[int]) -> None:
        """After the first event of a meter is stored, stop marking it on every insert."""
        for name, view in list(self._meters.items()):
            if view.id in meter_ids and not view.has_events:
                self._meters[name] = dataclasses.replace(view, has_events=True)

    def forget(self) -> None:
        self._meters_expire = 0.0
        self._tenants.clear()
