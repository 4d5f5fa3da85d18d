"""The committed openapi/openapi.json is the contract: it must equal what the code generates."""

from __future__ import annotations

import json

from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.openapi import render_openapi
from service.paths import PROJECT_ROOT

SPEC = PROJECT_ROOT / "openapi" / "openapi.json"


def test_committed_spec_matches_the_code() -> None:
    generated = render_openapi()
    committed = SPEC.read_text() if SPEC.exists() else ""
    assert committed == generated, "openapi/openapi.json is stale: run `make openapi` and commit it"


async def test_app_serves_the_spec_and_docs(client: AsyncTestClient[Litestar]) -> None:
    spec = await client.get("/docs/openapi.json")
    assert spec.status_code == 200
    assert json.loads(spec.text)["paths"].keys() == json.loads(render_openapi())["paths"].keys()
    docs = await client.get("/docs/")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
