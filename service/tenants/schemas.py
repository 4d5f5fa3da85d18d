from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from service.common.schemas import CurrencyCode, Name, Slug
from service.common.timezones import is_iana_zone

TenantStatus = Literal["active", "suspended"]
ScopeName = Literal["admin", "ingest", "read", "billing"]
TimezoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="IANA zone")]
RetentionDays = Annotated[int, msgspec.Meta(ge=1, le=36500)]


def _check_zone(name: str | msgspec.UnsetType) -> None:
    """Only IANA zone names: not `localtime`, `Factory`, `posixrules` or `right/...`, which
    zoneinfo would load too. msgspec reports the ValueError as invalid input."""
    if isinstance(name, str) and not is_iana_zone(name):
        raise ValueError(f"timezone {name!r} is not an IANA time zone (e.g. 'Europe/Berlin')")


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    id: Slug
    name: Name
    currency: CurrencyCode = "USD"
    timezone: TimezoneName = "UTC"
    retention_days: RetentionDays | None = None
    status: TenantStatus = "active"

    def __post_init__(self) -> None:
        _check_zone(self.timezone)


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    currency: CurrencyCode | msgspec.UnsetType = msgspec.UNSET
    timezone: TimezoneName | msgspec.UnsetType = msgspec.UNSET
    retention_days: RetentionDays | msgspec.UnsetType | None = msgspec.UNSET
    status: TenantStatus | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        _check_zone(self.timezone)


class TenantOut(msgspec.Struct):
    id: str
    name: str
    currency: str
    timezone: str
    retention_days: int | None
    status: str
    created_at: datetime
    updated_at: datetime


class ApiKeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    scopes: Annotated[list[ScopeName], msgspec.Meta(min_length=1, max_length=4)]
    tenant_id: Slug | None = None


class ApiKeyOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    tenant_id: str | None
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(msgspec.Struct):
    """The only answer that ever carries the key itself."""

    id: uuid.UUID
    key: str
    name: str
    prefix: str
    scopes: list[str]
    tenant_id: str | None
    created_at: datetime
