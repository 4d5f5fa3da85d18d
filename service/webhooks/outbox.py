"""Writing webhook messages: one delivery row per endpoint that takes the event type, written
on the connection (and so in the transaction) of the cause. The cause commits with its
messages or neither exists; the sender (service.webhooks.sender) posts them afterwards."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

ENQUEUE_SQL = """
INSERT INTO webhook_deliveries
    (tenant_id, id, endpoint_id, type, payload, status, next_attempt_at, created_at)
SELECT $1::text, gen_random_uuid(), e.id, $2::text, $3::text, 'pending', now(), now()
FROM webhook_endpoints AS e
WHERE $2::text = ANY(e.event_types) AND (e.tenant_id IS NULL OR e.tenant_id = $1::text)
"""


def message_body(event_type: str, data: Any, at: datetime | None = None) -> str:
    """The JSON body posted for an event: {type, timestamp, data}."""
    timestamp = (at or datetime.now(UTC)).astimezone(UTC)
    return msgspec.json.encode(
        {"type": event_type, "timestamp": timestamp.isoformat(), "data": data}
    ).decode()


async def enqueue(
    connection: asyncpg.Connection, tenant_id: str, event_type: str, data: Any
) -> int:
    """Write the message for every matching endpoint; returns how many deliveries that made.
    `data` is anything msgspec encodes (structs, dicts, decimals as strings)."""
    status = await connection.execute(
        ENQUEUE_SQL, tenant_id, event_type, message_body(event_type, data)
    )
    return int(status.rsplit(" ", 1)[-1])
