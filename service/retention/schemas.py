"""What a retention run reports."""

from __future__ import annotations

from datetime import datetime

import msgspec


class TenantRetention(msgspec.Struct, kw_only=True):
    tenant_id: str
    retention_days: int
    # Events with ts < cutoff are past retention.
    cutoff: datetime
    # Events deleted; in a dry run, events that would be deleted.
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    # Why this tenant's events were left alone (e.g. retention shorter than the late window).
    error: str | None = None


class DeliveryRetention(msgspec.Struct, kw_only=True):
    """Webhook messages (the outbox, with their attempts): delivered and failed ones created
    before `cutoff` are deleted; pending ones never."""

    retention_days: int
    cutoff: datetime
    # Messages deleted; in a dry run, messages that would be deleted.
    rows: int = 0
    batches: int = 0


class RetentionReport(msgspec.Struct, kw_only=True):
    dry_run: bool
    # True when another process held the retention lock: this run did nothing.
    skipped: bool = False
    tenants: list[TenantRetention] = []
    webhook_deliveries: DeliveryRetention | None = None
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(tenant.rows for tenant in self.tenants)

    @property
    def batches(self) -> int:
        return sum(tenant.batches for tenant in self.tenants)

    @property
    def errors(self) -> list[str]:
        return [tenant.error for tenant in self.tenants if tenant.error]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0
