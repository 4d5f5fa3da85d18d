"""Follow a keyset-paginated list to its end, checking every page on the way."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient


async def walk_pages(
    client: AsyncTestClient[Litestar],
    path: str,
    headers: dict[str, str],
    field: str,
    page_size: int = 2,
    **query: Any,
) -> list[Any]:
    """Every item's `field`, page after page, asserting no page exceeds `page_size`."""
    seen: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": page_size, **query}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= page_size
        seen += [item[field] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
