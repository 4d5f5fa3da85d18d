"""The query parameters every range query takes (usage, its summary, costs, the LLM report):
declared once, as a Litestar dependency whose own parameters are the query's, so each route
documents, checks (unknown parameters are refused) and parses them alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from litestar.params import Parameter

from service.common.periods import PERIOD_DOC

FROM_DOC = (
    "start, inclusive: RFC 3339 with an offset, on a 15-minute boundary (required unless "
    "`period` is given)"
)
TO_DOC = (
    "end, exclusive: RFC 3339 with an offset, on a 15-minute boundary (required unless "
    "`period` is given)"
)
GROUP_DOC = "repeatable: org_id, project_id, api_key_id, user_id, model or a declared dimension"
FILTER_DOC = "repeatable key:value equality filter (same keys as group_by; repeats of a key: any)"


@dataclass(frozen=True, slots=True)
class RangeParameters:
    """A range query's common parameters as the caller spelled them (the services check them)."""

    start: str | None = None
    end: str | None = None
    period: str | None = None
    tenant_id: str | None = None
    timezone: str | None = None
    group_by: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)


async def range_parameters(
    start: str | None = Parameter(default=None, query="from", description=FROM_DOC),
    end: str | None = Parameter(default=None, query="to", description=TO_DOC),
    period: str | None = Parameter(default=None, query="period", description=PERIOD_DOC),
    tenant_id: str | None = Parameter(
        default=None, query="tenant_id", description="optional for a tenant-bound key"
    ),
    timezone: str | None = Parameter(
        default=None, query="timezone", description="IANA zone; default the tenant's"
    ),
    group_by: list[str] | None = Parameter(default=None, query="group_by", description=GROUP_DOC),
    filters: list[str] | None = Parameter(default=None, query="filter", description=FILTER_DOC),
) -> RangeParameters:
    return RangeParameters(
        start=start,
        end=end,
        period=period,
        tenant_id=tenant_id,
        timezone=timezone,
        group_by=group_by or [],
        filters=filters or [],
    )
