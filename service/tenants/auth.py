"""API keys: random, shown once, stored as HMAC-SHA256 under the server secret; scope guards."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common.errors import Forbidden, Unauthorized
from service.tenants.models import ApiKey

KEY_PREFIX = "mk_"


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


@dataclass(frozen=True, slots=True)
class NewKey:
    plaintext: str
    prefix: str
    key_hash: bytes


def hash_key(secret_key: str, plaintext: str) -> bytes:
    return hmac.new(secret_key.encode(), plaintext.encode(), hashlib.sha256).digest()


def generate_key(secret_key: str) -> NewKey:
    prefix = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext=plaintext, prefix=prefix, key_hash=hash_key(secret_key, plaintext))


class KeyVerifier:
    """Verifies bearer keys against the database, caching verified ones for a few seconds so
    ingestion does not hit the database per request. Revocation takes effect within the TTL."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        secret_key: str,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._secret_key = secret_key
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    async def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("send 'Authorization: Bearer <api key>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX) or len(token) > 200:
            raise Unauthorized("the Authorization header must be 'Bearer <api key>'")
        digest = hash_key(self._secret_key, token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._load(digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise Unauthorized("unknown or revoked API key")
        return principal

    def forget(self) -> None:
        self._cache.clear()

    async def _load(self, digest: bytes) -> Principal | None:
        async with self._sessionmaker() as session:
            row = await session.scalar(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
        if row is None:
            return None
        return Principal(
            key_id=str(row.id), name=row.name, scopes=frozenset(row.scopes), tenant_id=row.tenant_id
        )


GuardFn = Callable[
    [ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]
]


def requires(*scopes: Scope) -> GuardFn:
    """A guard admitting keys holding any of `scopes` (admin keys hold every scope)."""
    wanted = frozenset(str(s) for s in scopes)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        verifier: KeyVerifier = connection.app.state.key_verifier
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
