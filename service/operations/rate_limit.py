"""Per-API-key rate limit: a token bucket per key, refilled at `rate_limit_per_second` and
holding at most `rate_limit_burst` tokens. Over the limit → 429 problem+json with Retry-After.

Why not Litestar's RateLimitConfig: it counts requests in fixed windows of whole seconds
(one "N per second" figure, no separate burst, twice the rate across a window boundary) and
stores each key's history as a JSON list of timestamps re-encoded on every request, which is
a per-request cost proportional to the limit on the ingestion path. A bucket is two floats.

Keys are identified by the HMAC of the bearer token (the same digest the key store uses), so
no token is kept in memory here. Requests without a bearer token are not limited: they are
either probes and /metrics or get a 401 without touching the database. Buckets live in each
worker process; with W workers a key can reach up to W times the rate on one replica."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware

from service.common.errors import RateLimited
from service.settings import Settings, SettingsError
from service.tenants.auth import hash_key

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

_MAX_BUCKETS = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key. Used from one event loop, so no locking: nothing awaits between
    reading and updating a bucket."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[bytes, _Bucket] = {}

    def take(self, key: bytes) -> float:
        """Take one token for `key`: 0.0 if granted, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(tokens=self.burst, updated=now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """A bucket that has refilled is the same as no bucket: drop those to bound memory."""
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < refill}
        if len(self._buckets) >= _MAX_BUCKETS:  # all busy: start over rather than grow
            self._buckets.clear()


class ApiKeyRateLimit(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)
    exclude_path_pattern = ("^/healthz$", "^/readyz$", "^/metrics$")

    def __init__(self, buckets: TokenBuckets, secret_key: str) -> None:
        self.buckets = buckets
        self.secret_key = secret_key

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = _bearer_token(scope["headers"])
        if token is not None:
            wait = self.buckets.take(hash_key(self.secret_key, token))
            if wait > 0:
                raise RateLimited(
                    f"this API key is limited to {self.buckets.rate:g} requests per second "
                    f"(bursts of {self.buckets.burst:g}); retry after the Retry-After seconds",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        await next_app(scope, receive, send)


def _bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def rate_limit_middleware(settings: Settings) -> list[ApiKeyRateLimit]:
    """The middleware list for the app: empty when the limit is off (rate 0)."""
    if settings.rate_limit_per_second <= 0:
        return []
    if settings.rate_limit_burst < 0:
        raise SettingsError("METERING_RATE_LIMIT_BURST must be 0 (= the rate) or more")
    burst = settings.rate_limit_burst or settings.rate_limit_per_second
    buckets = TokenBuckets(settings.rate_limit_per_second, burst)
    return [ApiKeyRateLimit(buckets, settings.secret_key)]
