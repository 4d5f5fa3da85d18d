"""LLM list prices from the `genai-prices` catalog (its data is bundled in the package).

Only the bundled snapshot is read: the package can fetch newer data over the network
(`UpdatePrices`), which this service never starts, so an import's numbers depend on the pinned
package version alone (requirements.lock), never on when or where it runs.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cache

from genai_prices.data import providers as bundled_providers
from genai_prices.data_snapshot import DataSnapshot, find_provider_by_id
from genai_prices.types import TieredPrices

from service.meters.catalog_types import CatalogPrices

CATALOG_CURRENCY = "USD"
PER_MILLION = Decimal(1_000_000)


class UnknownProvider(LookupError):
    pass


@cache
def _snapshot() -> DataSnapshot:
    return DataSnapshot(providers=bundled_providers, from_auto_update=False)


def provider_ids() -> list[str]:
    return sorted(provider.id for provider in _snapshot().providers)


def check_provider(provider: str) -> None:
    if find_provider_by_id(_snapshot().providers, provider) is None:
        raise UnknownProvider(provider)


def _base(price: Decimal | TieredPrices | None) -> Decimal | None:
    """A flat price, or the base tier of one that changes with the context size."""
    if isinstance(price, TieredPrices):
        return price.base
    return price


def lookup(model: str, provider: str | None, at: datetime) -> CatalogPrices | None:
    """The catalog's standard prices of `model` (optionally at `provider`) in effect at `at`,
    or None when the catalog does not know the model. The lookup may resolve a name to the
    catalog's entry (a dated snapshot to its model, say)."""
    try:
        found_provider, found = _snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    prices = found.get_prices(at)
    return CatalogPrices(
        provider=found_provider.id,
        model_id=found.id,
        input=_base(getattr(prices, "input_mtok", None)),
        output=_base(getattr(prices, "output_mtok", None)),
        cache_read=_base(getattr(prices, "cache_read_mtok", None)),
        # The catalog's plain cache write price is the 5-minute one (Anthropic's default).
        cache_write_5m=_base(getattr(prices, "cache_write_mtok", None)),
        cache_write_1h=_base(getattr(prices, "cache_write_1h_mtok", None)),
    )
