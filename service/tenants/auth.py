"""API keys: random, shown once, stored as HMAC-SHA256 under the server secret, and verified
(with a short cache) into the Principal the scope guards of service.common.auth admit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.common.auth import Principal
from service.common.errors import Unauthorized
from service.tenants.models import ApiKey

KEY_PREFIX = "mk_"


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
