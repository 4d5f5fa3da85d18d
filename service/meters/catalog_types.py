"""What the LLM price catalog says of one model, apart from the catalog itself (whose bundled
data is only loaded when an import runs)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CatalogPrices:
    """One model's prices per 1,000,000 tokens (None: the catalog has none)."""

    provider: str
    model_id: str  # the catalog's entry the requested name resolved to
    input: Decimal | None
    output: Decimal | None
    cache_read: Decimal | None
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None
