"""The query parameters of every keyset-paginated list (`cursor`, `limit`): declared once, as a
Litestar dependency whose own parameters are the query's (as range_parameters does for range
queries), so each list documents, checks and parses them alike."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.di import Provide

from service.common.schemas import DEFAULT_LIMIT, Limit


@dataclass(frozen=True, slots=True)
class PageParameters:
    """Where a page starts (`next_cursor` of the page before; None: the first) and its size."""

    cursor: str | None
    limit: int


async def page_parameters(
    cursor: str | None = None, limit: Limit = DEFAULT_LIMIT
) -> PageParameters:
    return PageParameters(cursor=cursor, limit=limit)


PAGE = Provide(page_parameters)
