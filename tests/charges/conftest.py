"""The invoice fixtures (a billing key, usage through the ingestion SQL) serve charges too."""

from tests.invoices.conftest import billing, record

__all__ = ["billing", "record"]
