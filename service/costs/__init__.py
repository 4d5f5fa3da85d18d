"""Costs: the rated cost of a tenant's usage, grouped like usage queries, read from the rollup
store and priced by the functions invoices use (service.invoices.rating)."""
