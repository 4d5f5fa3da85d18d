"""Who is calling: scopes, the principal of a verified API key, and the scope guard every
domain's controllers use. Keys themselves (generation, storage, verification) belong to
service.tenants; the guard reaches the verifier through the app state."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.common.errors import Forbidden


class Scope(StrEnum):
    ADMIN = "admin"
    INGEST = "ingest"
    READ = "read"
    BILLING = "billing"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    tenant_id: str | None

    def ensure_tenant(self, tenant_id: str) -> None:
        """A tenant-bound key can never touch another tenant's data."""
        if self.tenant_id is not None and self.tenant_id != tenant_id:
            raise Forbidden(f"this API key is bound to tenant '{self.tenant_id}'")

    def has_any(self, scopes: frozenset[str]) -> bool:
        return Scope.ADMIN in self.scopes or bool(self.scopes & scopes)


class Verifier(Protocol):
    """What the guard needs of `app.state.key_verifier`: the principal of an Authorization
    header, or Unauthorized."""

    async def verify(self, authorization: str | None) -> Principal: ...


GuardFn = Callable[
    [ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]
]


def requires(*scopes: Scope) -> GuardFn:
    """A guard admitting keys holding any of `scopes` (admin keys hold every scope)."""
    wanted = frozenset(str(s) for s in scopes)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        verifier: Verifier = connection.app.state.key_verifier
        principal = await verifier.verify(connection.headers.get("authorization"))
        if not principal.has_any(wanted):
            raise Forbidden(
                "this API key lacks the scope for this call "
                f"(needs one of: {', '.join(sorted(wanted))})"
            )
        connection.state.principal = principal

    guard.__name__ = f"requires_{'_'.join(sorted(wanted))}"
    return guard


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal: Principal = connection.state.principal
    return principal
