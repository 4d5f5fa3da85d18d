from __future__ import annotations

import hashlib
import hmac

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import TEST_SECRET, Keys

Client = AsyncTestClient[Litestar]


async def test_key_is_shown_once_and_stored_only_as_hmac(
    client: Client, keys: Keys, pg_pool: asyncpg.Pool
) -> None:
    await client.post("/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=keys.admin)
    created = await client.post(
        "/v1/api-keys",
        json={"name": "gateway", "scopes": ["ingest", "read"], "tenant_id": "acme"},
        headers=keys.admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    plaintext = body["key"]
    assert plaintext.startswith("mk_") and len(plaintext) > 40
    assert body["prefix"] in plaintext
    assert body["scopes"] == ["ingest", "read"]

    listed = (await client.get("/v1/api-keys", headers=keys.admin)).json()["items"]
    assert all("key" not in item for item in listed)
    assert plaintext not in str(listed)

    rows = await pg_pool.fetch("SELECT * FROM api_keys")
    dump = repr([dict(r) for r in rows])
    for row in rows:
        for value in row.values():
            assert plaintext not in str(value)
            assert plaintext.encode() not in (value if isinstance(value, bytes) else b"")
    assert plaintext not in dump
    expected = hmac.new(TEST_SECRET.encode(), plaintext.encode(), hashlib.sha256).digest()
    assert expected in {bytes(r["key_hash"]) for r in rows}


async def test_key_validation(client: Client, keys: Keys) -> None:
    await client.post("/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=keys.admin)
    cases = [
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["read"], "tenant_id": "ghost"},
        {"name": "x", "scopes": ["admin"], "tenant_id": "acme"},
        {"scopes": ["read"]},
    ]
    for body in cases:
        response = await client.post("/v1/api-keys", json=body, headers=keys.admin)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"


async def test_cached_key_is_refused_after_ttl(settings: object) -> None:
    """Verified keys are cached; revocation takes effect once the TTL passes."""
    from service.common.errors import Unauthorized
    from service.db.session import create_engine, create_sessionmaker
    from service.tenants.auth import KeyVerifier
    from service.tenants.schemas import ApiKeyCreate
    from service.tenants.service import ApiKeyService

    now = [1000.0]
    engine = create_engine(settings, settings.database_url)  # type: ignore[attr-defined]
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        created = await ApiKeyService(session, settings).create(  # type: ignore[arg-type]
            ApiKeyCreate(name="c", scopes=["read"])
        )
    verifier = KeyVerifier(sessionmaker, TEST_SECRET, ttl_seconds=5, clock=lambda: now[0])
    header = f"Bearer {created.key}"
    assert (await verifier.verify(header)).scopes == {"read"}
    async with sessionmaker() as session, session.begin():
        from service.tenants.repository import ApiKeyRepository

        await ApiKeyRepository(session).revoke(created.id)
    assert (await verifier.verify(header)).scopes == {"read"}  # still cached
    now[0] += 6
    try:
        await verifier.verify(header)
        raise AssertionError("revoked key accepted after the cache TTL")
    except Unauthorized:
        pass
    await engine.dispose()
