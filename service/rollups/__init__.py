"""The rollup store: the one home of pre-aggregated usage.

Every piece of SQL that writes or reads rollups lives here: the tables and the bucket width
(`models`), the aggregates and the upkeep ingestion runs in its own statement, and the rebuild
from raw events (`upkeep`, `rebuild`), and the read path every caller goes through (`query`).
Usage queries and invoices read the same cells, so they cannot disagree on a quantity."""
