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

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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
# Unknown query parameters are ignored by the API, as by most HTTP APIs: not negative data.
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, with_security_parameters=False, allow_extra_parameters=True
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
