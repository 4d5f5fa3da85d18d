"""Client and AsyncClient: usage, costs, LLM reports and invoices, with typed answers. Every
error answer raises `MeteringError` (its `code` and `errors` from the problem+json)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypedDict, TypeVar, Unpack

import httpx
import msgspec

from metering_client.errors import MeteringError
from metering_client.results import (
    Costs,
    Invoice,
    InvoicePage,
    LlmReport,
    Usage,
    UsageByMeter,
)

T = TypeVar("T")
Params = list[tuple[str, str | int | float | bool | None]]
TimeBound = datetime | str


class RangeQuery(TypedDict, total=False):
    """What every range query takes (keyword arguments of the clients' methods)."""

    tenant_id: str | None
    start: TimeBound | None  # the query parameter `from`
    end: TimeBound | None  # `to`
    period: str | None
    window_size: str | None
    timezone: str | None
    group_by: Sequence[str]
    filters: Mapping[str, str] | None  # `filter`: {key: value}, equality


class UsageQuery(RangeQuery, total=False):
    order_by: str | None
    limit: int | None


class CostQuery(UsageQuery, total=False):
    meter: str | None
    currency: str | None


class InvoiceQuery(TypedDict, total=False):
    tenant_id: str | None
    status: str | None
    period: str | None
    limit: int | None
    cursor: str | None


# Keyword arguments named otherwise than their query parameter.
_PARAMETER = {"start": "from", "end": "to", "filters": "filter"}


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API call: what to send and how to read the answer (`result` None: CSV text)."""

    method: str
    path: str
    result: type[T] | None
    params: Params = field(default_factory=list)
    body: Any = None
    accept: str = "application/json"


def _time(value: TimeBound) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("times must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
        return value.isoformat()
    return value


def _query(values: Mapping[str, Any]) -> Params:
    """Query parameters; None is left out, sequences repeat the name, mappings are filters
    (`key:value`), times are RFC 3339; `start`, `end` and `filters` are sent as `from`, `to`
    and `filter`."""
    params: Params = []
    for key, value in values.items():
        name = _PARAMETER.get(key, key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            params += [(name, f"{key}:{item}") for key, item in value.items()]
        elif isinstance(value, (list, tuple)):
            params += [(name, str(item)) for item in value]
        elif isinstance(value, datetime):
            params.append((name, _time(value)))
        else:
            params.append((name, str(value)))
    return params


class _Calls:
    """The calls both clients make."""

    @staticmethod
    def usage(meter: str | None, query: Mapping[str, Any]) -> Call[Any]:
        result: type[Any] = Usage if meter else UsageByMeter
        return Call("GET", "/v1/usage", result, _query({"meter": meter, **query}))

    @staticmethod
    def costs(query: CostQuery) -> Call[Costs]:
        return Call("GET", "/v1/costs", Costs, _query(query))

    @staticmethod
    def llm_report(query: RangeQuery) -> Call[LlmReport]:
        return Call("GET", "/v1/reports/llm", LlmReport, _query(query))

    @staticmethod
    def invoice_preview(tenant_id: str, period: str) -> Call[list[Invoice]]:
        path = f"/v1/tenants/{tenant_id}/invoices/preview"
        return Call("GET", path, list[Invoice], _query({"period": period}))  # type: ignore[arg-type]

    @staticmethod
    def finalize_invoices(tenant_id: str, period: str) -> Call[list[Invoice]]:
        path = f"/v1/tenants/{tenant_id}/invoices"
        return Call("POST", path, list[Invoice], body={"period": period})  # type: ignore[arg-type]

    @staticmethod
    def invoices(query: InvoiceQuery) -> Call[InvoicePage]:
        return Call("GET", "/v1/invoices", InvoicePage, _query(query))

    @staticmethod
    def invoice(invoice_id: str) -> Call[Invoice]:
        return Call("GET", f"/v1/invoices/{invoice_id}", Invoice)

    @staticmethod
    def invoice_csv(invoice_id: str) -> Call[str]:
        return Call("GET", f"/v1/invoices/{invoice_id}", None, accept="text/csv")

    @staticmethod
    def void_invoice(invoice_id: str) -> Call[Invoice]:
        return Call("POST", f"/v1/invoices/{invoice_id}/void", Invoice)


def _request(http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
    return http.build_request(
        call.method,
        call.path,
        params=call.params,
        content=None if call.body is None else msgspec.json.encode(call.body),
        headers={"Accept": call.accept}
        | ({"Content-Type": "application/json"} if call.body is not None else {}),
    )


def _answer(call: Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise MeteringError.from_response(response.status_code, response.content)
    if call.result is None:
        return response.text  # type: ignore[return-value]
    try:
        return msgspec.json.decode(response.content, type=call.result)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MeteringError(
            response.status_code, "unexpected_answer", "Unexpected answer", str(exc)
        ) from exc


def _http_options(base_url: str, api_key: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": base_url.rstrip("/"),
        "headers": {"Authorization": f"Bearer {api_key}", "User-Agent": "metering-client-python"},
        "timeout": timeout,
    }


class Client:
    """Reads usage, costs and LLM reports; previews, finalizes, lists and exports invoices.

    Times (`start`, `end`) are timezone-aware datetimes or RFC 3339 strings; `period`
    (`this_month`, `2026-10`, …) replaces them where the service takes it. `filters` is
    `{key: value}` (equality)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(**_http_options(base_url, api_key, timeout))

    def _call(self, call: Call[T]) -> T:
        try:
            response = self._http.send(_request(self._http, call))
        except httpx.HTTPError as exc:
            raise MeteringError(None, "unreachable", "No answer", repr(exc)) from exc
        return _answer(call, response)

    def usage(self, meter: str, **query: Unpack[UsageQuery]) -> Usage:
        """One meter's usage over `[start, end)` (or `period`), by window and group."""
        return self._call(_Calls.usage(meter, query))  # type: ignore[no-any-return]

    def usage_by_meter(self, **query: Unpack[RangeQuery]) -> UsageByMeter:
        """Every meter's usage of a tenant (GET /v1/usage without a meter)."""
        return self._call(_Calls.usage(None, query))  # type: ignore[no-any-return]

    def costs(self, **query: Unpack[CostQuery]) -> Costs:
        """The rated cost of a tenant's usage (exact decimals), grouped like usage."""
        return self._call(_Calls.costs(query))

    def llm_report(self, **query: Unpack[RangeQuery]) -> LlmReport:
        """Requests, tokens, cache hit rate, latency and cost of LLM calls."""
        return self._call(_Calls.llm_report(query))

    def invoice_preview(self, tenant_id: str, period: str) -> list[Invoice]:
        """Draft invoices of a month (`YYYY-MM`), one per currency; nothing is stored."""
        return self._call(_Calls.invoice_preview(tenant_id, period))

    def finalize_invoices(self, tenant_id: str, period: str) -> list[Invoice]:
        """Finalize a month's invoices (a `conflict` MeteringError when already finalized)."""
        return self._call(_Calls.finalize_invoices(tenant_id, period))

    def invoices(self, **query: Unpack[InvoiceQuery]) -> InvoicePage:
        """One page of finalized and void invoices; pass `next_cursor` on for the next."""
        return self._call(_Calls.invoices(query))

    def iter_invoices(
        self, *, tenant_id: str | None = None, status: str | None = None, period: str | None = None
    ) -> Iterator[Invoice]:
        """Every matching invoice, page after page."""
        cursor: str | None = None
        while True:
            page = self.invoices(tenant_id=tenant_id, status=status, period=period, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def invoice(self, invoice_id: str) -> Invoice:
        return self._call(_Calls.invoice(invoice_id))

    def invoice_csv(self, invoice_id: str) -> str:
        """The invoice as CSV text (what finance imports)."""
        return self._call(_Calls.invoice_csv(invoice_id))

    def void_invoice(self, invoice_id: str) -> Invoice:
        return self._call(_Calls.void_invoice(invoice_id))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """Client for asyncio: the same methods, awaited."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(**_http_options(base_url, api_key, timeout))

    async def _call(self, call: Call[T]) -> T:
        try:
            response = await self._http.send(_request(self._http, call))
        except httpx.HTTPError as exc:
            raise MeteringError(None, "unreachable", "No answer", repr(exc)) from exc
        return _answer(call, response)

    async def usage(self, meter: str, **query: Unpack[UsageQuery]) -> Usage:
        return await self._call(_Calls.usage(meter, query))  # type: ignore[no-any-return]

    async def usage_by_meter(self, **query: Unpack[RangeQuery]) -> UsageByMeter:
        return await self._call(_Calls.usage(None, query))  # type: ignore[no-any-return]

    async def costs(self, **query: Unpack[CostQuery]) -> Costs:
        return await self._call(_Calls.costs(query))

    async def llm_report(self, **query: Unpack[RangeQuery]) -> LlmReport:
        return await self._call(_Calls.llm_report(query))

    async def invoice_preview(self, tenant_id: str, period: str) -> list[Invoice]:
        return await self._call(_Calls.invoice_preview(tenant_id, period))

    async def finalize_invoices(self, tenant_id: str, period: str) -> list[Invoice]:
        return await self._call(_Calls.finalize_invoices(tenant_id, period))

    async def invoices(self, **query: Unpack[InvoiceQuery]) -> InvoicePage:
        return await self._call(_Calls.invoices(query))

    async def iter_invoices(
        self, *, tenant_id: str | None = None, status: str | None = None, period: str | None = None
    ) -> AsyncIterator[Invoice]:
        cursor: str | None = None
        while True:
            page = await self.invoices(
                tenant_id=tenant_id, status=status, period=period, cursor=cursor
            )
            for invoice in page.items:
                yield invoice
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def invoice(self, invoice_id: str) -> Invoice:
        return await self._call(_Calls.invoice(invoice_id))

    async def invoice_csv(self, invoice_id: str) -> str:
        return await self._call(_Calls.invoice_csv(invoice_id))

    async def void_invoice(self, invoice_id: str) -> Invoice:
        return await self._call(_Calls.void_invoice(invoice_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
