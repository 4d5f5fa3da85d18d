"""The connection pool, reporting how many connections are in use and how many requests wait.

Both gauges are updated where connections leave and return to the pool rather than computed
when /metrics is scraped: with several worker processes only one of them answers a scrape, and
prometheus-client's multiprocess mode sums the values every live worker last wrote."""

from __future__ import annotations

from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from service.common.metrics import DB_POOL_IN_USE, DB_POOL_WAITING


class ObservedQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio queue pool, counting checkouts and waiters.

    Pool events cannot do this: a `checkin` event also fires for a connection whose reconnect
    failed during checkout (the database is down), without a `checkout` event before it, so a
    gauge fed by events drifts exactly when it matters. `_do_get` / `_do_return_conn` are the
    two methods every pool implementation provides, and they always pair up."""

    # Log under "sqlalchemy." like the pool it extends, so SQLAlchemy's default WARN applies.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.ObservedQueuePool"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # QueuePool._do_get calls itself again when it loses a race for an overflow slot, so
        # one checkout can pass through here twice with the same record: count records.
        self._checked_out: set[ConnectionPoolEntry] = set()

    def _do_get(self) -> ConnectionPoolEntry:
        if self._will_wait():
            DB_POOL_WAITING.inc()
            try:
                record = super()._do_get()
            finally:
                DB_POOL_WAITING.dec()
        else:
            record = super()._do_get()
        if record not in self._checked_out:
            self._checked_out.add(record)
            DB_POOL_IN_USE.inc()
        return record

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            super()._do_return_conn(record)
        finally:
            if record in self._checked_out:
                self._checked_out.discard(record)
                DB_POOL_IN_USE.dec()

    def _will_wait(self) -> bool:
        """No idle connection and no room to open another: the caller queues for one."""
        at_capacity = self._max_overflow > -1 and self.overflow() >= self._max_overflow
        return at_capacity and self.checkedin() == 0
