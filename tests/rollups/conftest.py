"""The usage fixtures (tenants in awkward zones, meters of each aggregation, a read key)
serve the rollup store's tests too."""

from tests.usage.conftest import reader, world

__all__ = ["reader", "world"]
