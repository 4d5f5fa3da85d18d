"""Helpers for costs tests: GET /v1/costs with repeated parameters."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

# Usage in ended periods through the real ingestion SQL, as the invoice tests store it.
from tests.invoices.conftest import record  # noqa: F401 (a fixture)

Client = AsyncTestClient[Litestar]


async def costs(
    client: Client, key: dict[str, str], expect: int = 200, **params: Any
) -> dict[str, Any]:
    """GET /v1/costs; `from_` stands for `from`; list values repeat the parameter."""
    query: list[tuple[str, str]] = []
    for name, value in params.items():
        name = "from" if name == "from_" else name
        for item in value if isinstance(value, list) else [value]:
            query.append((name, str(item)))
    response = await client.get("/v1/costs", params=query, headers=key)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]
