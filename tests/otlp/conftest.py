"""A tenant, the LLM preset with OpenTelemetry mappings, a counter meter, and helpers to
export to POST /otlp/v1/metrics and read usage back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from tests.otlp.exports import TOKEN_USAGE

# meter event_name -> its `otel` mapping
MAPPINGS: dict[str, dict[str, Any]] = {
    "input_tokens": {"metric": TOKEN_USAGE, "attributes": {"gen_ai.token.type": "input"}},
    "output_tokens": {"metric": TOKEN_USAGE, "attributes": {"gen_ai.token.type": "output"}},
    # Every call records its input tokens once: the input points' count is the calls'.
    "llm_requests": {"metric": TOKEN_USAGE, "attributes": {"gen_ai.token.type": "input"}},
    "api_calls": {"metric": "app.requests"},
}


class HttpClient(Protocol):
    async def post(self, url: str, **kwargs: Any) -> httpx.Response: ...
    async def patch(self, url: str, **kwargs: Any) -> httpx.Response: ...
    async def get(self, url: str, **kwargs: Any) -> httpx.Response: ...


async def map_meters(client: HttpClient, admin: dict[str, str]) -> None:
    """Tenants acme and globex, the LLM preset in USD, the sum meter api_calls (dimension
    region), each mapped to an OpenTelemetry metric."""
    for tenant in ("acme", "globex"):
        answer = await client.post(
            "/v1/tenants", json={"id": tenant, "name": tenant, "timezone": "UTC"}, headers=admin
        )
        assert answer.status_code == 201, answer.text
    answer = await client.post("/v1/meters/presets/llm", json={"currency": "USD"}, headers=admin)
    assert answer.status_code == 200, answer.text
    answer = await client.post(
        "/v1/meters",
        json={
            "event_name": "api_calls",
            "name": "API calls",
            "aggregation": "sum",
            "dimensions": ["region"],
            "currency": "USD",
        },
        headers=admin,
    )
    assert answer.status_code == 201, answer.text
    for meter, mapping in MAPPINGS.items():
        answer = await client.patch(f"/v1/meters/{meter}", json={"otel": mapping}, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.json()["otel"] == {"attributes": {}, **mapping}


async def usage(
    client: HttpClient,
    headers: dict[str, str],
    meter: str,
    *,
    tenant: str = "acme",
    group_by: list[str] | None = None,
) -> dict[tuple[str, ...], tuple[str, int]]:
    """The last day's usage of a meter: {group values: (value, count)}."""
    now = datetime.now(UTC)
    params: dict[str, Any] = {
        "tenant_id": tenant,
        "meter": meter,
        "from": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:00:00Z"),
        "to": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:00:00Z"),
    }
    if group_by:
        params["group_by"] = group_by
    answer = await client.get("/v1/usage", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    return {
        tuple(row["group"].get(key) for key in group_by or []): (row["value"], row["count"])
        for row in answer.json()["rows"]
    }
