"""Ingestion: validate each event on its own, store the valid ones idempotently, answer per
event. Single events go through the group committer; a batch is one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from service.common.auth import Principal
from service.common.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    ServiceError,
)
from service.common.metrics import INGEST_BATCH_SIZE, INGEST_COMMIT_LATENCY, INGEST_EVENTS
from service.common.request_body import body_error, may_hold_unstorable_text
from service.db.connections import driver_connection
from service.events.group_commit import GroupCommitter
from service.events.reference import ReferenceCache
from service.events.repository import EventRow, StoredKey, mark_meters_used, store_events
from service.events.schemas import BatchIn, BatchOut, BatchResult, EventAck, EventError, EventIn
from service.events.validation import (
    Limits,
    Rejection,
    decode_error,
    text_rejection,
    validate_event,
)
from service.settings import Settings

MAX_STORE_ATTEMPTS = 3
# Validating a batch yields to the event loop after every this many events (see ingest_events).
YIELD_EVERY = 200


class RawBatch(msgspec.Struct):
    events: list[msgspec.Raw]


_WHOLE_BATCH = msgspec.json.Decoder(BatchIn)
_RAW_BATCH = msgspec.json.Decoder(RawBatch)
_ONE_EVENT = msgspec.json.Decoder(EventIn)


def _decode_batch(body: bytes) -> list[EventIn | Rejection]:
    """Decode a batch body. Well-formed batches (the usual case) decode in one pass; when any
    event is malformed, each is decoded on its own so the others still go through."""
    try:
        return list(_WHOLE_BATCH.decode(body).events)
    except UnicodeDecodeError as exc:
        # Not JSON text at all (JSON is UTF-8): the body as a whole is refused.
        raise body_error("the body is not valid UTF-8") from exc
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        pass
    try:
        envelope = _RAW_BATCH.decode(body)
    except UnicodeDecodeError as exc:
        raise body_error("the body is not valid UTF-8") from exc
    except RecursionError as exc:
        # Even skipping over an event recurses: the batch cannot be split into its events.
        raise body_error("the body is nested too deeply") from exc
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        rejection = decode_error(exc)
        raise InvalidInput(
            f'the body must be {{"events": [...]}}: {rejection.message}',
            errors=[FieldError(field=rejection.field or "events", message=rejection.message)],
        ) from exc
    items: list[EventIn | Rejection] = []
    for raw in envelope.events:
        try:
            items.append(_ONE_EVENT.decode(raw))
        except UnicodeDecodeError as exc:
            raise body_error("the body is not valid UTF-8") from exc
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            items.append(decode_error(exc, bytes(raw)))
    return items


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "Idempotency key reused with another payload"


class EventRejected(InvalidInput):
    """A single event failed validation; `code` is the specific reason."""

    def __init__(self, rejection: Rejection) -> None:
        field = rejection.field
        super().__init__(
            rejection.message,
            errors=[FieldError(field=field or "body", message=rejection.message)],
        )
        self.code = rejection.code  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # accepted | duplicate | conflict
    id: int


class Ingestor:
    def __init__(self, engine: AsyncEngine, reference: ReferenceCache, settings: Settings) -> None:
        self.engine = engine
        self.reference = reference
        self.settings = settings
        self.committer: GroupCommitter[EventRow, Outcome] = GroupCommitter(
            self._store_group,
            window_seconds=settings.group_commit_window_ms / 1000,
            max_items=settings.group_commit_max_events,
            flushers=settings.group_commit_flushers,
        )

    def _limits(self) -> Limits:
        return Limits(
            now=datetime.now(UTC),
            late_arrival=timedelta(days=self.settings.late_arrival_days),
            future_tolerance=timedelta(seconds=self.settings.future_tolerance_seconds),
        )

    # -- single events -------------------------------------------------------------------

    async def ingest_one(self, event: EventIn, principal: Principal) -> EventAck:
        if (unstorable := text_rejection(event)) is not None:
            INGEST_EVENTS.labels("invalid").inc()
            raise EventRejected(unstorable)
        tenant_id = _tenant_of(event, principal)
        if tenant_id is None:
            raise EventRejected(_missing_tenant())
        tenants = await self.reference.tenants({tenant_id})
        outcome_or_rejection = validate_event(
            event,
            tenant_id=tenant_id,
            tenant=tenants[tenant_id],
            meters=await self.reference.meters(),
            limits=self._limits(),
        )
        if isinstance(outcome_or_rejection, Rejection):
            INGEST_EVENTS.labels("invalid").inc()
            raise EventRejected(outcome_or_rejection)
        outcome = await self.committer.submit(outcome_or_rejection)
        INGEST_EVENTS.labels(outcome.status).inc()
        if outcome.status == "conflict":
            raise IdempotencyConflict(
                f"idempotency_key '{event.idempotency_key}' was already used for an event "
                "with a different payload"
            )
        return EventAck(id=str(outcome.id), status=outcome.status)  # type: ignore[arg-type]

    async def _store_group(self, rows: Sequence[EventRow]) -> list[Outcome]:
        started = time.perf_counter()
        async with driver_connection(self.engine) as connection:
            outcomes = await self._store(connection, rows)
        INGEST_COMMIT_LATENCY.observe(time.perf_counter() - started)
        return outcomes

    async def _store(
        self, connection: asyncpg.Connection, rows: Sequence[EventRow]
    ) -> list[Outcome]:
        """Store rows (repeats of one key allowed: the first wins) and classify each.

        Each statement commits on its own (autocommit): the insert of events and rollups is one
        statement, so it is atomic; the look-up of existing keys only reads."""
        await self._mark_meters_used(
            connection, {meter_id for row in rows for meter_id in row.all_meter_ids()}
        )
        first: dict[tuple[str, str], int] = {}
        for index, row in enumerate(rows):
            first.setdefault((row.tenant_id, row.idempotency_key), index)
        unique = [rows[i] for i in first.values()]
        stored: dict[tuple[str, str], StoredKey] = {}
        pending = unique
        for _ in range(MAX_STORE_ATTEMPTS):
            stored.update(await store_events(connection, pending))
            # A key that conflicted but is gone by the time we look (deleted meanwhile) is
            # simply tried again.
            pending = [r for r in pending if (r.tenant_id, r.idempotency_key) not in stored]
            if not pending:
                break
        else:
            raise ServiceError("could not settle idempotency keys; retry the request")
        outcomes: list[Outcome] = []
        for index, row in enumerate(rows):
            key = (row.tenant_id, row.idempotency_key)
            hit = stored[key]
            if hit.inserted and first[key] == index:
                outcomes.append(Outcome("accepted", hit.id))
            elif hit.payload_hash == row.payload_hash:
                outcomes.append(Outcome("duplicate", hit.id))
            else:
                outcomes.append(Outcome("conflict", hit.id))
        return outcomes

    async def _mark_meters_used(self, connection: asyncpg.Connection, meter_ids: set[int]) -> None:
        """Freeze aggregation and currency of meters about to get their first events. Done
        before the insert, so a meter can never hold events while still marked unused."""
        meters = await self.reference.meters()
        unmarked = {m.id for m in meters.values() if not m.has_events} & meter_ids
        if unmarked:
            await mark_meters_used(connection, sorted(unmarked))
            self.reference.note_meters_used(unmarked)

    # -- batches -------------------------------------------------------------------------

    async def ingest_batch(self, body: bytes, principal: Principal) -> BatchOut:
        items = _decode_batch(body)
        # Only a body spelling a NUL or a lone surrogate as a \u escape can hold one.
        check_text = may_hold_unstorable_text(body)
        count = len(items)
        limit = self.settings.batch_max_events
        if count > limit:
            raise BatchTooLarge(
                f"a batch holds at most {limit} events, this one has {count}; split it",
                errors=[FieldError(field="events", message=f"more than {limit} events")],
            )
        INGEST_BATCH_SIZE.observe(count)
        final = await self.ingest_events(items, principal, check_text=check_text)
        accepted = sum(1 for r in final if r.status == "accepted")
        duplicates = sum(1 for r in final if r.status == "duplicate")
        return BatchOut(
            accepted=accepted,
            duplicates=duplicates,
            rejected=len(final) - accepted - duplicates,
            results=final,
        )

    async def ingest_events(
        self,
        items: Sequence[EventIn | Rejection],
        principal: Principal,
        *,
        check_text: bool = True,
    ) -> list[BatchResult]:
        """Validate decoded events each on its own and store the valid ones idempotently: one
        result per item, by index. The batch endpoint and the OTLP receiver both ingest here.
        Events are stored in statements of at most the batch limit each."""
        results: list[BatchResult | None] = [None] * len(items)
        decoded: list[tuple[int, EventIn, str]] = []
        for index, item in enumerate(items):
            if isinstance(item, Rejection):
                results[index] = _invalid(index, item)
                continue
            if check_text and (unstorable := text_rejection(item)) is not None:
                results[index] = _invalid(index, unstorable)
                continue
            tenant_id = _tenant_of(item, principal)
            if tenant_id is None:
                results[index] = _invalid(index, _missing_tenant())
                continue
            decoded.append((index, item, tenant_id))
        tenants = await self.reference.tenants({t for _, _, t in decoded})
        meters = await self.reference.meters()
        limits = self._limits()
        to_store: list[tuple[int, EventRow]] = []
        for position, (index, event, tenant_id) in enumerate(decoded, start=1):
            if position % YIELD_EVERY == 0:
                # Let the worker's other requests run between slices of a big batch: a
                # budget check waits for one slice (about a millisecond), not a whole batch.
                await asyncio.sleep(0)
            checked = validate_event(
                event, tenant_id=tenant_id, tenant=tenants[tenant_id], meters=meters, limits=limits
            )
            if isinstance(checked, Rejection):
                results[index] = _invalid(index, checked)
            else:
                to_store.append((index, checked))
        step = self.settings.batch_max_events
        for start in range(0, len(to_store), step):
            chunk = to_store[start : start + step]
            started = time.perf_counter()
            async with driver_connection(self.engine) as connection:
                outcomes = await self._store(connection, [row for _, row in chunk])
            INGEST_COMMIT_LATENCY.observe(time.perf_counter() - started)
            for (index, _), outcome in zip(chunk, outcomes, strict=True):
                results[index] = _stored_result(index, outcome)
        final = [r for r in results if r is not None]
        for status in ("accepted", "duplicate", "conflict", "invalid"):
            n = sum(1 for r in final if r.status == status)
            if n:
                INGEST_EVENTS.labels(status).inc(n)
        return final

    async def close(self) -> None:
        await self.committer.close()


class BatchTooLarge(PayloadTooLarge):
    code = "batch_too_large"


def _tenant_of(event: EventIn, principal: Principal) -> str | None:
    if principal.tenant_id is not None:
        if event.tenant_id is not None and event.tenant_id != principal.tenant_id:
            raise Forbidden(
                f"this API key is bound to tenant '{principal.tenant_id}' and cannot write "
                f"events for '{event.tenant_id}'"
            )
        return principal.tenant_id
    return event.tenant_id


def _missing_tenant() -> Rejection:
    return Rejection(
        "missing_tenant",
        "tenant_id is required (this API key is not bound to a tenant)",
        "tenant_id",
    )


def _invalid(index: int, rejection: Rejection) -> BatchResult:
    return BatchResult(
        index=index,
        status="invalid",
        error=EventError(code=rejection.code, message=rejection.message, field=rejection.field),
    )


def _stored_result(index: int, outcome: Outcome) -> BatchResult:
    if outcome.status == "conflict":
        return BatchResult(
            index=index,
            status="conflict",
            id=str(outcome.id),
            error=EventError(
                code="idempotency_conflict",
                message="idempotency_key already used for an event with a different payload",
                field="idempotency_key",
            ),
        )
    return BatchResult(index=index, status=outcome.status, id=str(outcome.id))  # type: ignore[arg-type]
