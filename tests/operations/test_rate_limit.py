"""Per-API-key rate limit: token buckets (rate + burst), 429 problem+json with Retry-After."""

from __future__ import annotations

import asyncio

import pytest

from service.app import create_app
from service.operations.rate_limit import TokenBuckets, rate_limit_middleware
from service.settings import SettingsError
from tests.conftest import Keys, make_settings
from tests.support.in_loop import in_loop_client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate=2, burst=3, clock=clock)
    assert [buckets.take(b"k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take(b"k") == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.5
    assert buckets.take(b"k") == 0.0
    assert buckets.take(b"k") > 0
    clock.now += 60  # refills to the burst, not beyond
    assert [buckets.take(b"k") for _ in range(4)].count(0.0) == 3


def test_buckets_are_per_key() -> None:
    buckets = TokenBuckets(rate=1, burst=1, clock=FakeClock())
    assert buckets.take(b"a") == 0.0
    assert buckets.take(b"a") > 0
    assert buckets.take(b"b") == 0.0


def test_rate_zero_means_no_limit_and_burst_defaults_to_the_rate() -> None:
    assert rate_limit_middleware(make_settings("postgresql://x@h/db")) == []
    [limit] = rate_limit_middleware(make_settings("postgresql://x@h/db", rate_limit_per_second=7))
    assert limit.buckets.rate == 7
    assert limit.buckets.burst == 7
    with pytest.raises(SettingsError):
        rate_limit_middleware(
            make_settings("postgresql://x@h/db", rate_limit_per_second=1, rate_limit_burst=-1)
        )


async def test_over_the_limit_is_429_problem_with_retry_after(
    database_url: str, keys: Keys
) -> None:
    other = await keys.make("read", name="other")
    app = create_app(make_settings(database_url, rate_limit_per_second=2, rate_limit_burst=3))
    async with in_loop_client(app) as client:
        statuses = [
            (await client.get("/v1/tenants", headers=keys.admin)).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 200]
        limited = await client.get("/v1/tenants", headers=keys.admin)
        assert limited.status_code == 429, limited.text
        assert limited.headers["content-type"].startswith("application/problem+json")
        problem = limited.json()
        assert problem["code"] == "rate_limited"
        assert problem["status"] == 429
        assert int(limited.headers["retry-after"]) >= 1
        # Another key has its own bucket (a read key: 403 from the guard, not 429).
        assert (await client.get("/v1/tenants", headers=other)).status_code == 403
        # Probes and /metrics are never limited, even with a bearer token.
        for path in ("/healthz", "/metrics"):
            for _ in range(5):
                assert (await client.get(path, headers=keys.admin)).status_code == 200
        # Without a key there is nothing to limit: 401 from the guard.
        assert (await client.get("/v1/tenants")).status_code == 401
        # After Retry-After the key may call again.
        await asyncio.sleep(float(limited.headers["retry-after"]))
        assert (await client.get("/v1/tenants", headers=keys.admin)).status_code == 200
