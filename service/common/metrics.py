"""Prometheus metrics, defined once. /metrics renders them (see the operations issue): with
several worker processes, prometheus-client's multiprocess mode aggregates across them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "metering_http_requests_total",
    "HTTP requests, by status answered (499: the client disconnected before the answer)",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "metering_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INGEST_EVENTS = Counter(
    "metering_ingest_events_total",
    "Events received, by outcome (accepted, duplicate, conflict, invalid)",
    ["outcome"],
)
INGEST_BATCH_SIZE = Histogram(
    "metering_ingest_batch_size",
    "Events per POST /v1/events/batch request",
    buckets=(1, 10, 50, 100, 250, 500, 1000),
)
GROUP_COMMIT_SIZE = Histogram(
    "metering_group_commit_size",
    "Single-event requests coalesced into one statement and commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
INGEST_COMMIT_LATENCY = Histogram(
    "metering_ingest_commit_duration_seconds",
    "Time to store and commit one ingest statement",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
RETENTION_DELETED = Counter(
    "metering_retention_deleted_rows_total", "Raw events deleted by retention"
)
RETENTION_BATCHES = Counter("metering_retention_batches_total", "Retention delete batches")
RETENTION_DURATION = Histogram(
    "metering_retention_run_duration_seconds",
    "Duration of a retention run",
    buckets=(0.1, 1, 10, 60, 300, 900, 3600),
)
RETENTION_LAST_SUCCESS = Gauge(
    "metering_retention_last_success_timestamp_seconds",
    "Unix time of the last successful retention run",
    multiprocess_mode="max",
)
DB_POOL_IN_USE = Gauge(
    "metering_db_pool_connections_in_use",
    "Database connections checked out",
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "metering_db_pool_waiting_requests",
    "Requests waiting for a database connection",
    multiprocess_mode="livesum",
)
WEBHOOK_DELIVERIES = Counter(
    "metering_webhook_deliveries_total",
    "Webhook deliveries ended, by outcome (delivered, failed: retries ran out)",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "metering_webhook_attempts_total",
    "Webhook delivery attempts, by result (success, error: non-2xx, timeout or refused)",
    ["result"],
)
WEBHOOK_ATTEMPT_LATENCY = Histogram(
    "metering_webhook_attempt_duration_seconds",
    "Time for a receiver to answer one webhook attempt",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_DELIVERY_DELAY = Histogram(
    "metering_webhook_delivery_delay_seconds",
    "From the cause (the outbox row's creation) to a successful delivery",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 60, 300, 3600, 86400),
)
WEBHOOK_PENDING = Gauge(
    "metering_webhook_deliveries_pending",
    "Webhook deliveries waiting for a first or further attempt (all workers see the same)",
    multiprocess_mode="max",
)
