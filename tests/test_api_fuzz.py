"""API fuzzing: schemathesis generates requests for every operation of the committed contract
(openapi/openapi.json) and calls the app in-process with an admin key. Every answer goes
through schemathesis' standard checks: no 5xx, documented status codes, content types,
headers and bodies, authentication enforced, invalid input rejected, valid input accepted,
undocumented methods refused with a correct Allow.

Checks adjusted (not dropped):

- negative_data_rejection also accepts 413: a body over its documented size (more events in a
  batch than `maxItems`, or over METERING_MAX_BODY_BYTES) is refused with 413
  payload_too_large / batch_too_large, which is a rejection, just a more precise one.
- positive_data_acceptance also accepts 422: the API checks rules a JSON schema cannot state
  and answers 422 naming the field: ISO 4217 currencies and IANA time zones (pattern-valid
  "AAA" or "Mars/Base" are not), references to tenants and meters that must exist, a tenant_id
  that an unbound key must give, prices changing on 15-minute boundaries. The check still
  fails on any other refusal of schema-valid input (400, 405, 413, 415, ...).

One check is excluded for one operation: negative_data_rejection on POST /v1/events/batch.
A batch is accepted as a whole and validated event by event (the API contract): an invalid event is
reported in `results` with status "invalid" while the valid ones are stored, so a batch
holding a malformed event rightly answers 200. The batch envelope itself (not an object, no
`events`, too many events) is still rejected, and the check still runs on POST /v1/events.

Examples per operation are bounded (MAX_EXAMPLES) so CI stays fast."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from litestar.testing import AsyncTestClient
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection

from service.app import create_app
from service.paths import PROJECT_ROOT
from service.settings import Settings
from tests.conftest import Keys

SPEC = PROJECT_ROOT / "openapi" / "openapi.json"
MAX_EXAMPLES = 25
NEGATIVE_REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
PER_ITEM_VALIDATION = frozenset({"POST /v1/events/batch"})

schema = schemathesis.openapi.from_path(SPEC)
schema.config.update(base_url=f"http://{asgi.HOST}")
# The admin key is sent with every request (below), so schemathesis must not generate or
# mutate Authorization itself; its ignored_auth check still probes every operation without it.
# Unknown query parameters are refused (422 naming them), so they are negative data.
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, with_security_parameters=False, allow_extra_parameters=False
)
schema.config.checks.negative_data_rejection.expected_statuses = NEGATIVE_REJECTED
schema.config.checks.positive_data_acceptance.expected_statuses = POSITIVE_ACCEPTED


@pytest.fixture
def fuzzed_app(settings: Settings) -> Iterator[Any]:
    """A fresh app per operation: schemathesis runs it on an event loop of its own (a portal
    thread), and the session app's connections belong to the tests' loop."""
    yield create_app(settings)
    asgi.shutdown_lifespans()  # dispose of its engine before the next one


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_contract(case: Any, fuzzed_app: Any, keys: Keys) -> None:
    # A schema loaded from a file knows no app: bind it so that the checks' own probes (e.g.
    # the same request without a key) reach the app in-process too.
    case.operation.schema.app = case.operation.app = fuzzed_app
    excluded = [negative_data_rejection] if case.operation.label in PER_ITEM_VALIDATION else []
    case.call_and_validate(headers=keys.admin, excluded_checks=excluded)


# --- explicit cases: bodies a JSON schema cannot describe ---------------------------------

_PATH_VALUES = {
    "tenant_id": "acme",
    "event_name": "tokens",
    "price_id": "00000000-0000-0000-0000-000000000000",
    "charge_id": "00000000-0000-0000-0000-000000000000",
    "commitment_id": "00000000-0000-0000-0000-000000000000",
}


def _body_operations() -> list[tuple[str, str]]:
    """Every operation of the committed contract that takes a body, paths filled in."""
    spec = json.loads(SPEC.read_text())
    found = []
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                path = re.sub(r"\{(\w+)\}", lambda m: _PATH_VALUES[m.group(1)], template)
                found.append((method.upper(), path))
    return sorted(found)


BODY_OPERATIONS = _body_operations()
DEEP_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000
UNREADABLE_BODIES = {
    "invalid UTF-8": b'{"name": "\xff", "event_name": "\xfe"}',
    "invalid UTF-8 in a batch event": b'{"events": [{"event_name": "\xff"}]}',
    "truncated UTF-8": b'{"name": "caf\xc3"}',
    "array nested 1000 deep": DEEP_ARRAY,
    "object nested 1000 deep": DEEP_OBJECT,
    "nested 1000 deep in a batch event": b'{"events": [{"metadata": ' + DEEP_OBJECT + b"}]}",
}
OVERSIZED_NUMBERS = {"1e400": b"1e400", "-1e400": b"-1e400", "10**400": b"1" + b"0" * 400}


def test_every_body_operation_is_exercised() -> None:
    assert len(BODY_OPERATIONS) >= 10, BODY_OPERATIONS
    assert ("POST", "/v1/events/batch") in BODY_OPERATIONS


@pytest.mark.parametrize("name", sorted(UNREADABLE_BODIES))
@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
async def test_unreadable_bodies_are_422_on_every_body_operation(
    client: AsyncTestClient[Litestar], keys: Keys, method: str, path: str, name: str
) -> None:
    headers = {**keys.admin, "content-type": "application/json"}
    response = await client.request(method, path, content=UNREADABLE_BODIES[name], headers=headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize("number", sorted(OVERSIZED_NUMBERS))
async def test_oversized_numbers_are_refused_never_5xx(
    client: AsyncTestClient[Litestar], keys: Keys, number: str
) -> None:
    tenant = {"id": "acme", "name": "Acme"}
    assert (await client.post("/v1/tenants", json=tenant, headers=keys.admin)).status_code == 201
    meter = {"event_name": "tokens", "name": "Tokens", "aggregation": "sum", "currency": "USD"}
    assert (await client.post("/v1/meters", json=meter, headers=keys.admin)).status_code == 201
    big = OVERSIZED_NUMBERS[number]
    now = datetime.now(UTC).isoformat().encode()
    event = b'{"tenant_id": "acme", "event_name": "tokens", "idempotency_key": "big", '
    event += b'"timestamp": "' + now + b'", "value": ' + big + b"}"
    bodies = [
        ("POST", "/v1/events", event),
        ("POST", "/v1/events/batch", b'{"events": [' + event + b"]}"),
        ("POST", "/v1/prices", b'{"meter": "tokens", "unit_amount": ' + big + b"}"),
        (
            "POST",
            "/v1/prices",
            b'{"meter": "tokens", "unit_amount": "1", "per_units": ' + big + b"}",
        ),
        (
            "POST",
            "/v1/prices",
            b'{"meter": "tokens", "tiers": [{"up_to": ' + big + b', "unit_amount": "1"}, '
            b'{"unit_amount": ' + big + b"}]}",
        ),
        ("POST", "/v1/tenants", b'{"id": "big", "name": "Big", "retention_days": ' + big + b"}"),
    ]
    headers = {**keys.admin, "content-type": "application/json"}
    for method, path, body in bodies:
        response = await client.request(method, path, content=body, headers=headers)
        assert response.status_code < 500, (path, body[:80], response.text)
        if path == "/v1/events/batch":
            assert response.json()["rejected"] == 1, response.text
        else:
            assert response.status_code == 422, (path, body[:80], response.text)
