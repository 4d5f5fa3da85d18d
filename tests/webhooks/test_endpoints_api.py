"""The webhook endpoints API: registration, secrets shown once, listing, deletion, refusals."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Keys
from tests.support.problems import assert_problem
from tests.webhooks.conftest import Client, create_tenant, register


async def test_register_list_get_delete(hooks_client: Client, keys: Keys) -> None:
    await create_tenant(hooks_client, keys)
    created = [
        await register(
            hooks_client,
            keys,
            f"http://127.0.0.1:9/hooks/{n}",
            ["invoice.voided", "invoice.finalized", "invoice.voided"],
            description=f"finance {n}",
            **({"tenant_id": "acme"} if n == 0 else {}),
        )
        for n in range(3)
    ]
    first = created[0]
    assert first["event_types"] == ["invoice.finalized", "invoice.voided"]
    assert first["tenant_id"] == "acme"
    assert first["secret"].startswith("whsec_")
    assert len({c["secret"] for c in created}) == 3

    got = await hooks_client.get(f"/v1/webhook-endpoints/{first['id']}", headers=keys.admin)
    assert got.status_code == 200
    assert "secret" not in got.json()
    assert got.json() == {k: v for k, v in first.items() if k != "secret"}

    page = await hooks_client.get("/v1/webhook-endpoints?limit=2", headers=keys.admin)
    assert page.status_code == 200
    assert [e["id"] for e in page.json()["items"]] == [c["id"] for c in created[:2]]
    assert all("secret" not in e for e in page.json()["items"])
    rest = await hooks_client.get(
        "/v1/webhook-endpoints",
        params={"limit": 2, "cursor": page.json()["next_cursor"]},
        headers=keys.admin,
    )
    assert [e["id"] for e in rest.json()["items"]] == [created[2]["id"]]
    assert rest.json()["next_cursor"] is None
    only_acme = await hooks_client.get("/v1/webhook-endpoints?tenant_id=acme", headers=keys.admin)
    assert [e["id"] for e in only_acme.json()["items"]] == [first["id"]]

    gone = await hooks_client.delete(f"/v1/webhook-endpoints/{first['id']}", headers=keys.admin)
    assert gone.status_code == 204
    for path in (
        f"/v1/webhook-endpoints/{first['id']}",
        f"/v1/webhook-endpoints/{first['id']}/deliveries",
    ):
        assert (await hooks_client.get(path, headers=keys.admin)).status_code == 404
    again = await hooks_client.delete(f"/v1/webhook-endpoints/{first['id']}", headers=keys.admin)
    assert again.status_code == 404


async def test_private_and_loopback_receivers_are_refused_by_default(
    client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    # `client` runs with the default settings: METERING_WEBHOOK_ALLOW_PRIVATE is off.
    for url in (
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://10.1.2.3/hooks",
        "http://192.168.0.10/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://[::ffff:127.0.0.1]/hooks",
        "http://0.0.0.0/hooks",
    ):
        answer = await client.post(
            "/v1/webhook-endpoints",
            json={"url": url, "event_types": ["invoice.finalized"]},
            headers=keys.admin,
        )
        assert_problem(answer, 422, "validation_error", field="url")
        assert "METERING_WEBHOOK_ALLOW_PRIVATE" in answer.json()["detail"], url


async def test_bad_input_names_the_field(hooks_client: Client, keys: Keys) -> None:
    cases = [
        ({"url": "ftp://example.com/x", "event_types": ["invoice.finalized"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x", "event_types": ["invoice.finalized"]}, "url"),
        ({"url": "http://127.0.0.1/x", "event_types": ["invoice.paid"]}, "event_types"),
        ({"url": "http://127.0.0.1/x", "event_types": []}, "event_types"),
        ({"url": "http://127.0.0.1/x"}, "event_types"),
        (
            {"url": "http://127.0.0.1/x", "event_types": ["invoice.voided"], "tenant_id": "nope"},
            "tenant_id",
        ),
        ({"url": "http://127.0.0.1/x", "event_types": ["invoice.voided"], "secret": "x"}, "secret"),
    ]
    for body, field in cases:
        answer = await hooks_client.post("/v1/webhook-endpoints", json=body, headers=keys.admin)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text, (body, answer.text)


async def test_unknown_query_parameters_and_deliveries_of_unknown_things(
    hooks_client: Client, keys: Keys
) -> None:
    answer = await hooks_client.get("/v1/webhook-endpoints?tenant=acme", headers=keys.admin)
    assert_problem(answer, 422, "validation_error", field="tenant")
    endpoint = await register(hooks_client, keys, "http://127.0.0.1:9/hooks")
    answer = await hooks_client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?status=lost", headers=keys.admin
    )
    assert answer.status_code == 422
    answer = await hooks_client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/"
        "00000000-0000-0000-0000-000000000000/retry",
        headers=keys.admin,
    )
    assert_problem(answer, 404, "not_found")
