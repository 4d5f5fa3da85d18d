"""Delivery to a real local receiver: signatures, retries with backoff, failure, manual retry."""

from __future__ import annotations

import asyncio
import itertools
import json

from standardwebhooks.webhooks import Webhook

from tests.conftest import Keys
from tests.support.receiver import Receiver
from tests.webhooks.conftest import (
    Client,
    create_tenant,
    finalize,
    register,
    wait_for_status,
)


async def test_a_finalized_invoice_reaches_the_receiver_signed(
    hooks_client: Client, keys: Keys, receiver: Receiver
) -> None:
    await create_tenant(hooks_client, keys)
    endpoint = await register(hooks_client, keys, receiver.url)
    assert endpoint["secret"].startswith("whsec_")
    invoice = await finalize(hooks_client, keys)

    [request] = await asyncio.to_thread(receiver.wait_for, 1)
    # The library verifies the signature, and refuses a tampered body.
    verified = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert verified["type"] == "invoice.finalized"
    assert verified["data"] == invoice
    assert verified["timestamp"]
    tampered = request.body.replace(b"finalized", b"FINALIZED", 1)
    try:
        Webhook(endpoint["secret"]).verify(tampered, request.headers)
    except Exception:
        pass
    else:
        raise AssertionError("a tampered body verified")

    [delivery] = await wait_for_status(hooks_client, keys, endpoint["id"], "delivered")
    assert delivery["id"] == request.webhook_id
    assert delivery["type"] == "invoice.finalized"
    assert delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert attempt["latency_ms"] >= 0


async def test_a_receiver_failing_three_times_gets_the_message_again_each_time(
    hooks_client: Client, keys: Keys, receiver: Receiver
) -> None:
    receiver.statuses = [500, 500, 500]
    await create_tenant(hooks_client, keys)
    endpoint = await register(hooks_client, keys, receiver.url)
    await finalize(hooks_client, keys)

    received = await asyncio.to_thread(receiver.wait_for, 4)
    assert [r.status for r in received] == [500, 500, 500, 200]
    assert len({r.webhook_id for r in received}) == 1
    # Each attempt is signed afresh (its own timestamp) and verifies.
    for request in received:
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert len({r.body for r in received}) == 1

    [delivery] = await wait_for_status(hooks_client, keys, endpoint["id"], "delivered")
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 200]
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 500"] * 3 + [None]
    assert delivery["id"] == received[0].webhook_id
    # Backoff: the retries came no sooner than the configured delays (0.2 s here).
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    assert all(gap >= 0.15 for gap in gaps), gaps


async def test_retries_run_out_then_failed_and_a_manual_retry_sends_again(
    hooks_client: Client, keys: Keys, receiver: Receiver
) -> None:
    receiver.default_status = 503
    await create_tenant(hooks_client, keys)
    endpoint = await register(hooks_client, keys, receiver.url)
    await finalize(hooks_client, keys)

    [delivery] = await wait_for_status(hooks_client, keys, endpoint["id"], "failed")
    # The first attempt and one per retry delay (four in these tests).
    assert [a["status_code"] for a in delivery["attempts"]] == [503] * 5
    assert delivery["next_attempt_at"] is None

    receiver.default_status = 204
    answer = await hooks_client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry",
        headers=keys.admin,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "pending"
    [delivery] = await wait_for_status(hooks_client, keys, endpoint["id"], "delivered")
    assert [a["status_code"] for a in delivery["attempts"]] == [503] * 5 + [204]
    assert {r.webhook_id for r in receiver.received} == {delivery["id"]}


async def test_a_receiver_that_is_down_is_retried(hooks_client: Client, keys: Keys) -> None:
    from tests.support.live_server import free_port
    from tests.support.receiver import running_receiver

    port = free_port()  # nothing listens there yet
    await create_tenant(hooks_client, keys)
    endpoint = await register(hooks_client, keys, f"http://127.0.0.1:{port}/hooks")
    await finalize(hooks_client, keys)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        items = (
            await hooks_client.get(
                f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=keys.admin
            )
        ).json()["items"]
        if items and items[0]["attempts"]:
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    first = items[0]["attempts"][0]
    assert first["status_code"] is None
    assert "Connect" in first["error"]
    with running_receiver(port) as receiver:
        [delivery] = await wait_for_status(hooks_client, keys, endpoint["id"], "delivered")
        assert receiver.received[0].webhook_id == delivery["id"]


async def test_void_and_finalize_go_to_the_endpoints_that_take_them(
    hooks_client: Client, keys: Keys, receiver: Receiver
) -> None:
    await create_tenant(hooks_client, keys, "acme")
    await create_tenant(hooks_client, keys, "globex")
    voids = await register(hooks_client, keys, receiver.url + "/voids", ["invoice.voided"])
    acme_only = await register(
        hooks_client, keys, receiver.url + "/acme", ["invoice.finalized"], tenant_id="acme"
    )
    invoice = await finalize(hooks_client, keys, "acme")
    await finalize(hooks_client, keys, "globex")
    answer = await hooks_client.post(f"/v1/invoices/{invoice['id']}/void", headers=keys.admin)
    assert answer.status_code == 200

    [voided] = await wait_for_status(hooks_client, keys, voids["id"], "delivered")
    assert voided["type"] == "invoice.voided"
    assert voided["tenant_id"] == "acme"
    [finalized] = await wait_for_status(hooks_client, keys, acme_only["id"], "delivered")
    assert finalized["tenant_id"] == "acme"
    bodies = [json.loads(r.body) for r in await asyncio.to_thread(receiver.wait_for, 2)]
    assert sorted(b["type"] for b in bodies) == ["invoice.finalized", "invoice.voided"]
    void_body = next(b for b in bodies if b["type"] == "invoice.voided")
    assert void_body["data"]["status"] == "void"
    assert void_body["data"]["id"] == invoice["id"]
