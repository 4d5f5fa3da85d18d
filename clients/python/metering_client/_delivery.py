"""How one batch is delivered, without I/O: `deliver` is a generator that yields `Post` (send
this body to POST /v1/events/batch; send back the `Reply`, or the exception the request
raised) and `Sleep` (wait, then send back None, or `ABANDON` when the tracker is closing and
out of time). The threaded and the asyncio trackers drive the same generator, so both retry,
split and count alike.

Exactly-once: every event of a batch keeps the idempotency key it got when it was recorded, so
a batch sent again after an answer was lost is answered `duplicate` for what was stored and
`accepted` for the rest; the service never stores an event twice."""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

import msgspec

from metering_client._events import Batch, Event
from metering_client.errors import MeteringError

logger = logging.getLogger("metering_client")

BATCH_PATH = "/v1/events/batch"
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the service refused (`status` `invalid` or `conflict`: its key was used with
    another payload), or that a whole-request 4xx refused (`status` `refused`). Not retried."""

    event: Event
    status: str
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Counters since the tracker started (in a forked child: since the fork).

    `recorded` = `sent` + `duplicates` + `rejected` + `dropped` + `buffered` + the events of
    batches in flight. `sent`: stored by the service now; `duplicates`: the service already
    had them (a retried batch whose answer was lost, or a key recorded twice); `rejected`:
    refused (and passed to `on_rejected`); `dropped`: lost on this side (`drop_oldest` on a
    full buffer, retries past `max_retry_seconds`, `close` out of time); `retries`: requests
    sent again."""

    recorded: int
    sent: int
    duplicates: int
    rejected: int
    dropped: int
    retries: int
    buffered: int


class Counters:
    """The tracker's counters; delivery updates them from several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.duplicates = 0
        self.rejected = 0
        self.dropped = 0
        self.retries = 0

    def add(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


OnRejected = Callable[[Rejection], Any]
OnFull = Literal["block", "drop_oldest"]


class TrackerOptions(TypedDict, total=False):
    """The keyword arguments both trackers take after `tenant_id` (defaults in `Options`)."""

    flush_events: int
    flush_seconds: float
    max_batch: int
    max_buffered: int
    on_full: OnFull
    block_timeout: float | None
    max_retry_seconds: float
    on_rejected: OnRejected | None


@dataclass(frozen=True, slots=True)
class Options:
    base_url: str
    api_key: str
    # Send when this many events wait, or when the oldest has waited this long.
    flush_events: int = 500
    flush_seconds: float = 1.0
    max_batch: int = 1000  # events per request
    max_buffered: int = 100_000  # then on_full: wait for room ("block") or "drop_oldest"
    on_full: OnFull = "block"
    block_timeout: float | None = None  # how long "block" waits (None: as long as it takes)
    max_retry_seconds: float = 3600  # how long a batch is retried before it is given up
    on_rejected: OnRejected | None = None  # called with each event the service refuses

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.on_full not in ("block", "drop_oldest"):
            raise ValueError(f'on_full must be "block" or "drop_oldest", got {self.on_full!r}')
        if self.max_batch < 1 or self.max_buffered < 1:
            raise ValueError("max_batch and max_buffered must be at least 1")
        if self.flush_events < 1 or self.flush_seconds <= 0:
            raise ValueError("flush_events must be at least 1 and flush_seconds above 0")
        if self.max_retry_seconds < 0:
            raise ValueError("max_retry_seconds must not be negative")

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "User-Agent": "metering-client-python",
        }


@dataclass(frozen=True, slots=True)
class Post:
    body: bytes


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes


ABANDON = object()
Step = Post | Sleep


class _Result(msgspec.Struct):
    index: int
    status: str
    error: dict[str, Any] | None = None


class _Answer(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[_Result]


_ANSWER = msgspec.json.Decoder(_Answer)
_ENCODER = msgspec.json.Encoder()


def encode_batch(events: list[Event]) -> bytes:
    return _ENCODER.encode(Batch(events=events))


def backoff(attempt: int, retry_after: float | None) -> float:
    """Exponential from 0.2 s, doubling up to 30 s, with jitter (half to all of it) so that
    many clients do not come back at the same instant; never sooner than Retry-After."""
    delay = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2**attempt)
    delay *= random.uniform(0.5, 1.0)
    return float(max(delay, retry_after or 0.0))


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _retryable(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


def deliver(
    events: list[Event], options: Options, counters: Counters
) -> Generator[Step, Reply | BaseException | object | None, None]:
    """Deliver one batch: every event ends up counted once as sent, duplicate, rejected or
    dropped."""
    parts = [events]
    attempt = 0
    failing_since: float | None = None
    while parts:
        part = parts.pop()
        reply = yield Post(encode_batch(part))
        retry_after: float | None = None
        if isinstance(reply, Reply):
            if reply.status == 200:
                try:
                    answer = _ANSWER.decode(reply.content)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    why = "an answer that is not a batch result"
                else:
                    _settle(part, answer, options, counters)
                    attempt, failing_since = 0, None
                    continue
            elif reply.status == 413 and len(part) > 1:
                # The body is over the service's size limit: send it in halves.
                half = len(part) // 2
                parts += [part[half:], part[:half]]
                continue
            elif not _retryable(reply.status):
                _refuse(
                    part,
                    MeteringError.from_response(reply.status, reply.content),
                    options,
                    counters,
                )
                continue
            else:
                why = f"HTTP {reply.status}"
                retry_after = retry_after_seconds(reply.headers.get("retry-after"))
        else:
            why = repr(reply)
        now = time.monotonic()
        if failing_since is None:
            failing_since = now
        delay = backoff(attempt, retry_after)
        if now + delay - failing_since > options.max_retry_seconds:
            counters.add(dropped=len(part))
            logger.error(
                "metering: gave up on %d events after %.0f s of failures (last: %s)",
                len(part),
                now - failing_since,
                why,
            )
            continue
        logger.warning(
            "metering: batch of %d events failed (%s), retrying in %.2f s", len(part), why, delay
        )
        attempt += 1
        counters.add(retries=1)
        if (yield Sleep(delay)) is ABANDON:
            lost = len(part) + sum(len(rest) for rest in parts)
            counters.add(dropped=lost)
            logger.error("metering: closing out of time, %d events not delivered", lost)
            return
        parts.append(part)


def _settle(part: list[Event], answer: _Answer, options: Options, counters: Counters) -> None:
    counters.add(sent=answer.accepted, duplicates=answer.duplicates, rejected=answer.rejected)
    if not answer.rejected:
        return
    for result in answer.results:
        if result.status in ("accepted", "duplicate"):
            continue
        error = result.error or {}
        _reject(
            Rejection(
                event=part[result.index],
                status=result.status,
                code=str(error.get("code", result.status)),
                message=str(error.get("message", "")),
                field=error.get("field"),
            ),
            options,
        )


def _refuse(part: list[Event], error: MeteringError, options: Options, counters: Counters) -> None:
    counters.add(rejected=len(part))
    logger.error("metering: the service refused a batch of %d events: %s", len(part), error)
    if options.on_rejected is None:
        return
    for event in part:
        _reject(
            Rejection(event, "refused", error.code, error.detail or error.title), options, log=False
        )


def _reject(rejection: Rejection, options: Options, log: bool = True) -> None:
    if log:
        logger.warning(
            "metering: event %s %s: %s %s",
            rejection.event.idempotency_key,
            rejection.status,
            rejection.code,
            rejection.message,
        )
    if options.on_rejected is not None:
        try:
            options.on_rejected(rejection)
        except Exception:
            logger.exception("metering: the on_rejected callback failed")
