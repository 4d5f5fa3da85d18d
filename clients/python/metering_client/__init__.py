"""Python client of the metering service.

- `Tracker` / `AsyncTracker`: record usage events from a service; buffered, batched, retried
  exactly-once (idempotency keys made when an event is recorded).
- `Client` / `AsyncClient`: usage, costs, LLM reports and invoices, with typed answers.
- `MeteringError`: any error answer, with the service's `code` and `errors`.
"""

from metering_client._delivery import Rejection, TrackerStats
from metering_client._events import Event, uuid7
from metering_client.async_tracker import AsyncTracker
from metering_client.client import AsyncClient, Client
from metering_client.errors import BufferFull, FieldError, MeteringError, TrackerClosed
from metering_client.results import (
    CostRow,
    Costs,
    Invoice,
    InvoiceLine,
    InvoicePage,
    LlmReport,
    LlmReportRow,
    MeterCost,
    MeterUsage,
    UnpricedUsage,
    Usage,
    UsageByMeter,
    UsageRow,
)
from metering_client.tracker import Tracker

__all__ = [
    "AsyncClient",
    "AsyncTracker",
    "BufferFull",
    "Client",
    "CostRow",
    "Costs",
    "Event",
    "FieldError",
    "Invoice",
    "InvoiceLine",
    "InvoicePage",
    "LlmReport",
    "LlmReportRow",
    "MeterCost",
    "MeterUsage",
    "MeteringError",
    "Rejection",
    "Tracker",
    "TrackerClosed",
    "TrackerStats",
    "UnpricedUsage",
    "Usage",
    "UsageByMeter",
    "UsageRow",
    "uuid7",
]
