"""The sender: posts due deliveries of the outbox, signed per the Standard Webhooks
specification, and records each attempt.

Every worker runs METERING_WEBHOOK_SENDERS sender tasks, each on a dedicated connection. A
sender claims up to METERING_WEBHOOK_BATCH_SIZE due rows with `FOR UPDATE SKIP LOCKED` in one
transaction, posts them concurrently, records the attempts and commits. The row lock is held
while posting, so no other sender (of this process or another replica) can post the same
message at the same time: it skips the row. A sender that dies mid-batch loses its connection,
its transaction rolls back and its locks go; the rows are due again and are posted once more
with the same `webhook-id` (at least once: receivers de-duplicate on that id).

A failed attempt (no 2xx, a timeout, a refused address) is retried after the next of
METERING_WEBHOOK_RETRY_DELAYS_SECONDS; when they are used up the delivery is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import structlog
from standardwebhooks.webhooks import Webhook

from service.common.metrics import (
    WEBHOOK_ATTEMPT_LATENCY,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_DELAY,
    WEBHOOK_PENDING,
)
from service.settings import Settings
from service.webhooks.addresses import AddressRefused, check_receiver

log = structlog.get_logger(__name__)

USER_AGENT = "metering-webhooks/1"
# Errors are kept short in the attempts list: the receiver's own logs have the rest.
MAX_ERROR_CHARS = 300
PENDING_GAUGE_SECONDS = 5.0

CLAIM_SQL = """
SELECT d.tenant_id, d.id, d.payload, d.attempt_count, d.created_at, e.url, e.secret
FROM webhook_deliveries AS d
JOIN webhook_endpoints AS e ON e.id = d.endpoint_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now()
ORDER BY d.next_attempt_at
LIMIT $1
FOR UPDATE OF d SKIP LOCKED
"""
RECORD_SQL = """
UPDATE webhook_deliveries
SET status = $3, attempt_count = attempt_count + 1, attempts = attempts || $4::jsonb,
    next_attempt_at = $5, delivered_at = $6
WHERE tenant_id = $1 AND id = $2
"""
PENDING_SQL = "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def as_json(self) -> str:
        return json.dumps(
            [
                {
                    "at": self.at.isoformat(),
                    "status_code": self.status_code,
                    "latency_ms": self.latency_ms,
                    "error": self.error,
                }
            ]
        )


def signed_headers(
    secret: str | Webhook, message_id: str, payload: str, at: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's, so that
    receivers rejecting old timestamps accept retries). `secret` may be its signer, made
    once for a batch's messages to one endpoint."""
    signer = Webhook(secret) if isinstance(secret, str) else secret
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signer.sign(message_id, at, payload),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


async def post_message(
    client: aiohttp.ClientSession,
    settings: Settings,
    url: str,
    secret: str | Webhook,
    message_id: str,
    payload: str,
) -> Attempt:
    at = datetime.now(UTC)
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    try:
        await check_receiver(url, allow_private=settings.webhook_allow_private)
        async with client.post(
            url,
            data=payload.encode(),
            headers=signed_headers(secret, message_id, payload, at),
            allow_redirects=False,
        ) as response:
            status_code = response.status
            await response.read()  # the whole answer, so the connection can be reused
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except AddressRefused as exc:
        error = f"refused: {exc}"
    except TimeoutError:
        error = f"timed out after {settings.webhook_timeout_seconds:g} s"
    except aiohttp.ClientError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    elapsed = time.perf_counter() - started
    WEBHOOK_ATTEMPT_LATENCY.observe(elapsed)
    return Attempt(
        at=at,
        status_code=status_code,
        latency_ms=round(elapsed * 1000, 3),
        error=error[:MAX_ERROR_CHARS] if error else None,
    )


def next_step(
    attempt: Attempt, attempts_before: int, delays: Sequence[float]
) -> tuple[str, datetime | None]:
    """(status, next_attempt_at) after an attempt: delivered, pending again after the next
    delay, or failed once the delays are used up."""
    if attempt.succeeded:
        return "delivered", None
    if attempts_before < len(delays):
        return "pending", attempt.at + timedelta(seconds=delays[attempts_before])
    return "failed", None


async def send_due(
    connection: asyncpg.Connection,
    client: aiohttp.ClientSession,
    settings: Settings,
    delays: Sequence[float],
) -> int:
    """Claim, post and record one batch of due deliveries; returns how many were attempted."""
    async with connection.transaction():
        rows = await connection.fetch(CLAIM_SQL, settings.webhook_batch_size)
        if not rows:
            return 0
        signers = {secret: Webhook(secret) for secret in {row["secret"] for row in rows}}
        attempts = await asyncio.gather(
            *(
                post_message(
                    client,
                    settings,
                    row["url"],
                    signers[row["secret"]],
                    str(row["id"]),
                    row["payload"],
                )
                for row in rows
            )
        )
        records = []
        for row, attempt in zip(rows, attempts, strict=True):
            status, next_at = next_step(attempt, row["attempt_count"], delays)
            delivered_at = attempt.at if status == "delivered" else None
            records.append(
                (row["tenant_id"], row["id"], status, attempt.as_json(), next_at, delivered_at)
            )
            WEBHOOK_ATTEMPTS.labels("success" if attempt.succeeded else "error").inc()
            if status == "delivered":
                WEBHOOK_DELIVERIES.labels("delivered").inc()
                WEBHOOK_DELIVERY_DELAY.observe((attempt.at - row["created_at"]).total_seconds())
            elif status == "failed":
                WEBHOOK_DELIVERIES.labels("failed").inc()
                log.warning(
                    "webhooks.delivery_failed", delivery_id=str(row["id"]), error=attempt.error
                )
        await connection.executemany(RECORD_SQL, records)
    return len(rows)


async def sender_loop(settings: Settings, database_url: str, *, report_pending: bool) -> None:
    """Send due deliveries until cancelled: at once again after a full batch, else after
    METERING_WEBHOOK_SEND_INTERVAL_SECONDS. A lost database is logged and retried."""
    from service.db.connections import dedicated_connection

    interval = settings.webhook_send_interval_seconds
    delays = settings.webhook_retry_delays()
    pending_checked = 0.0
    timeout = aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds)
    # aiohttp, not httpx: posting a batch concurrently, httpx spent about 1 ms of CPU per
    # message here (its connection pool), aiohttp about 0.1 ms (docs/webhooks.md, benchmarks).
    # No proxies from the environment (trust_env is off): receivers are reached directly.
    async with aiohttp.ClientSession(timeout=timeout) as client:
        while True:
            try:
                async with dedicated_connection(database_url, "metering-webhooks") as connection:
                    while True:
                        sent = await send_due(connection, client, settings, delays)
                        if report_pending and time.monotonic() - pending_checked > (
                            PENDING_GAUGE_SECONDS
                        ):
                            WEBHOOK_PENDING.set(await connection.fetchval(PENDING_SQL))
                            pending_checked = time.monotonic()
                        if sent < settings.webhook_batch_size:
                            await asyncio.sleep(interval)
            except Exception:
                log.exception("webhooks.sender_failed")
                await asyncio.sleep(max(interval, 1.0))


def start_senders(settings: Settings, database_url: str) -> list[asyncio.Task[None]]:
    """This worker's senders; none when METERING_WEBHOOK_SEND_INTERVAL_SECONDS is 0."""
    if settings.webhook_send_interval_seconds <= 0:
        return []
    return [
        asyncio.create_task(
            sender_loop(settings, database_url, report_pending=index == 0),
            name=f"webhook-sender-{index}",
        )
        for index in range(settings.webhook_senders)
    ]


async def stop_senders(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait: a batch in flight rolls back and is posted again later (same ids)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
