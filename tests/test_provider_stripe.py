"""Contract tests: the real Stripe adapter (official SDK, aiohttp client) against the local fake.

Also: the parsers against hand-written example payloads (tests/data/stripe/, following
../shared/providers.md section 3; see the README there), and webhook signatures made by the fake
checked by the verification the gateway will use.
"""
from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from providers import stripe_billing as sb
from providers.errors import ProviderError
from providers.fakes.server import FakeServer
from providers.fakes.stripe import StripeFake, parse_form, sign
from providers.stripe_billing import StripeBilling, WebhookSignatureError, verify_webhook

KEY = "sk_test_contract_0123456789"
WHSEC = "whsec_contract_secret"
DATA = Path(__file__).parent / "data" / "stripe"


class Receiver:
    """The gateway's webhook endpoint, reduced to remembering what arrived (raw body + signature)."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        self.got.append((await request.read(), request.headers.get("Stripe-Signature", "")))
        return web.json_response({"received": True})

    def events(self) -> list[dict]:
        return [verify_webhook(body, sig, WHSEC) for body, sig in self.got]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]


@pytest.fixture
async def env():
    receiver = Receiver()
    hook_server = await FakeServer(receiver.app).start()
    fake = StripeFake(api_key=KEY, webhook_secret=WHSEC, webhook_url=f"{hook_server.url}/hook")
    fake.add_price("price_pro_monthly", unit_amount=9900)
    fake.add_price("price_setup_fee", unit_amount=4900, interval=None)
    server = await FakeServer(fake.app).start()
    server.faults.timeout_seconds = 1.5
    adapter = StripeBilling(KEY, base_url=server.url, timeout=3, max_network_retries=2, retry_delay=0.01)
    yield fake, server, adapter, receiver
    await adapter.close()
    await fake.close()
    await server.stop()
    await hook_server.stop()


async def subscribe(fake: StripeFake, adapter: StripeBilling) -> tuple[sb.Customer, sb.CheckoutSession]:
    customer = await adapter.create_customer(email="owner@example.com", name="Ada Dental",
                                             metadata={"organization_id": "42"})
    session = await adapter.create_subscription_checkout(
        price_id="price_pro_monthly", customer=customer.id, client_reference_id="42", metadata={"plan": "PRO"},
        success_url="https://app.test/billing?s={CHECKOUT_SESSION_ID}", cancel_url="https://app.test/billing")
    await fake.complete_checkout(session.id)
    return customer, session


async def test_subscription_checkout_then_paid_emits_signed_events(env):
    fake, server, adapter, receiver = env
    customer, session = await subscribe(fake, adapter)
    assert customer.id.startswith("cus_") and customer.metadata == {"organization_id": "42"}
    assert session.id.startswith("cs_test_") and session.url and session.url.startswith(server.url)
    assert (session.mode, session.status, session.subscription) == ("subscription", "open", None)
    assert receiver.types() == ["checkout.session.completed", "customer.subscription.created", "invoice.finalized",
                                "invoice.paid", "invoice.payment_succeeded"]
    completed = sb.parse_checkout_session(receiver.events()[0]["data"]["object"])
    assert (completed.status, completed.payment_status, completed.client_reference_id) == ("complete", "paid", "42")
    sub = await adapter.get_subscription(completed.subscription or "")
    assert sub.id.startswith("sub_") and sub.customer == customer.id and sub.status == "active"
    assert sub.price_id == "price_pro_monthly" and sub.metadata == {"plan": "PRO"}
    assert sub.current_period_end - sub.current_period_start == 30 * 86400
    paid = sb.parse_invoice(receiver.events()[3]["data"]["object"])
    assert (paid.status, paid.amount_paid, paid.billing_reason, paid.subscription) == (
        "paid", 9900, "subscription_create", sub.id)
    assert sub.latest_invoice == paid.id and paid.id.startswith("in_")


async def test_payment_checkout_and_price_errors(env):
    fake, server, adapter, receiver = env
    inline = await adapter.create_payment_checkout(amount=2500, product_name="Number porting fee",
                                                   customer_email="a@example.com", success_url="https://app.test/ok",
                                                   cancel_url="https://app.test/no")
    by_price = await adapter.create_payment_checkout(price_id="price_setup_fee", success_url="https://app.test/ok",
                                                     cancel_url="https://app.test/no")
    assert inline.mode == by_price.mode == "payment" and inline.url and by_price.url
    assert fake.sessions[inline.id]["amount_total"] == 2500 and fake.sessions[by_price.id]["amount_total"] == 4900
    await fake.complete_checkout(inline.id)
    assert receiver.types() == ["checkout.session.completed"]
    assert fake.customers[fake.sessions[inline.id]["customer"]]["email"] == "a@example.com"
    with pytest.raises(ProviderError) as exc:  # a recurring price cannot be bought in payment mode
        await adapter.create_payment_checkout(price_id="price_pro_monthly", success_url="https://x.test",
                                              cancel_url="https://x.test")
    assert (exc.value.provider, exc.value.status, exc.value.retryable) == ("stripe", 400, False)
    with pytest.raises(ProviderError) as exc:
        await adapter.create_subscription_checkout(price_id="price_nope", success_url="https://x.test",
                                                   cancel_url="https://x.test")
    assert exc.value.code == "resource_missing" and "price_nope" in exc.value.message


async def test_sandbox_checkout_page_completes_and_redirects(env):
    fake, server, adapter, receiver = env
    session = await adapter.create_subscription_checkout(
        price_id="price_pro_monthly", customer_email="b@example.com",
        success_url="https://app.test/billing?s={CHECKOUT_SESSION_ID}", cancel_url="https://app.test/billing")
    async with aiohttp.ClientSession() as http:
        async with http.get(session.url, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"https://app.test/billing?s={session.id}"
    assert fake.sessions[session.id]["status"] == "complete" and "invoice.paid" in receiver.types()


async def test_portal_session(env):
    fake, server, adapter, receiver = env
    customer = await adapter.create_customer(email="c@example.com")
    portal = await adapter.create_portal_session(customer=customer.id, return_url="https://app.test/billing")
    assert portal.id.startswith("bps_") and portal.customer == customer.id and portal.url
    with pytest.raises(ProviderError) as exc:
        await adapter.create_portal_session(customer="cus_missing", return_url="https://app.test/billing")
    assert (exc.value.status, exc.value.code) == (400, "resource_missing")


async def test_cancel_at_period_end_undo_and_cancel_now(env):
    fake, server, adapter, receiver = env
    _, session = await subscribe(fake, adapter)
    sub_id = fake.sessions[session.id]["subscription"]
    receiver.got.clear()
    sub = await adapter.set_cancel_at_period_end(sub_id, True)
    assert sub.cancel_at_period_end and sub.cancel_at == sub.current_period_end and sub.status == "active"
    sub = await adapter.set_cancel_at_period_end(sub_id, False)
    assert not sub.cancel_at_period_end and sub.cancel_at is None
    await fake.flush()
    first, second = (sb.parse_event(e) for e in receiver.events())
    assert first.type == second.type == "customer.subscription.updated"
    assert first.previous_attributes == {"cancel_at_period_end": False, "cancel_at": None}
    assert second.previous_attributes["cancel_at_period_end"] is True
    assert receiver.events()[0]["request"]["idempotency_key"]  # the SDK's key, echoed as Stripe does
    sub = await adapter.cancel_subscription_now(sub_id)
    assert sub.status == "canceled" and sub.ended_at
    await fake.flush()
    assert receiver.types()[-1] == "customer.subscription.deleted"
    with pytest.raises(ProviderError) as exc:
        await adapter.set_cancel_at_period_end(sub_id, True)
    assert exc.value.status == 400
    with pytest.raises(ProviderError) as exc:
        await adapter.get_subscription("sub_missing")
    assert (exc.value.status, exc.value.code, exc.value.retryable) == (404, "resource_missing", False)


async def test_overage_is_billed_once_per_key(env):
    fake, server, adapter, receiver = env
    customer = await adapter.create_customer(email="d@example.com")
    key = "overage-42-2026-11-23"
    charge = await adapter.charge_overage(customer=customer.id, amount=1250, currency="usd",
                                          description="Overage: 50 minutes", idempotency_key=key)
    assert charge.item.id.startswith("ii_") and charge.item.invoice == charge.invoice.id
    assert (charge.invoice.status, charge.invoice.amount_paid, charge.payment_error) == ("paid", 1250, None)
    assert charge.invoice.metadata["idempotency_key"] == key
    again = await adapter.charge_overage(customer=customer.id, amount=1250, currency="usd",
                                         description="Overage: 50 minutes", idempotency_key=key)
    assert again == charge and len(fake.invoice_items) == 1 and len(fake.invoices) == 1
    keys = [r["idempotency_key"] for r in fake.requests if r["method"] == "POST" and "invoice" in r["path"]]
    assert keys[:4] == [f"{key}:invoice", f"{key}:item", f"{key}:finalize", f"{key}:pay"]
    with pytest.raises(ProviderError) as exc:  # same key, other parameters: Stripe refuses
        await adapter.charge_overage(customer=customer.id, amount=9999, currency="usd",
                                     description="Overage: 50 minutes", idempotency_key=key)
    assert (exc.value.code, exc.value.status, exc.value.retryable) == ("idempotency_error", 400, False)
    await fake.flush()
    assert receiver.types().count("invoice.paid") == 1


async def test_overage_decline_and_renewal_failure(env):
    fake, server, adapter, receiver = env
    customer, session = await subscribe(fake, adapter)
    fake.decline_cards(customer.id)
    charge = await adapter.charge_overage(customer=customer.id, amount=700, currency="usd",
                                          description="Overage", idempotency_key="overage-42-2026-11-30")
    assert charge.payment_error and "declined" in charge.payment_error
    assert (charge.invoice.status, charge.invoice.attempt_count) == ("open", 1)
    assert charge.invoice.next_payment_attempt and charge.invoice.hosted_invoice_url
    fake.decline_cards(customer.id, False)
    assert (await fake.retry_invoice_payment(charge.invoice.id))["status"] == "paid"
    rerun = await adapter.charge_overage(customer=customer.id, amount=700, currency="usd",  # replays the decline,
                                         description="Overage", idempotency_key="overage-42-2026-11-30")
    assert (rerun.invoice.status, rerun.payment_error) == ("paid", None)  # but reports the invoice as it is now
    fake.decline_cards(customer.id)
    sub_id = fake.sessions[session.id]["subscription"]
    invoice = await fake.renew_subscription(sub_id)
    assert invoice["billing_reason"] == "subscription_cycle" and invoice["status"] == "open"
    assert (await adapter.get_subscription(sub_id)).status == "past_due"
    failed = [sb.parse_invoice(e["data"]["object"]) for e in receiver.events() if e["type"] == "invoice.payment_failed"]
    assert [f.subscription for f in failed] == [None, sub_id]
    assert receiver.types().count("invoice.paid") == 2  # the first subscription invoice, the retried overage
    assert receiver.types()[-1] == "customer.subscription.updated"


async def test_resent_event_keeps_its_id(env):
    fake, server, adapter, receiver = env
    await subscribe(fake, adapter)
    first = receiver.events()[0]
    await fake.resend(first["id"])
    assert receiver.events()[-1] == first and [e["id"] for e in receiver.events()].count(first["id"]) == 2
    assert all(d.get("status") == 200 for d in fake.deliveries)


async def test_webhook_signatures():
    # Test vector from providers.md 3.6.
    body = b'{"id":"evt_test_1","object":"event"}'
    header = "t=1700000000,v1=29ab30b7065c11b28e53ac114fac5d6c492ed811a12d11ed2c2aad5bb4cf9809"
    assert sign(body, "whsec_test_secret", 1700000000) == header
    assert verify_webhook(body, header, "whsec_test_secret", now=1700000100)["id"] == "evt_test_1"
    assert verify_webhook(body, header, "whsec_test_secret", now=1700000300)  # exactly at the tolerance
    with pytest.raises(WebhookSignatureError, match="older than 300"):
        verify_webhook(body, header, "whsec_test_secret", now=1700000301)
    with pytest.raises(WebhookSignatureError) as exc:
        verify_webhook(body.replace(b"_1", b"_2"), header, "whsec_test_secret", now=1700000000)
    assert isinstance(exc.value, ProviderError) and exc.value.provider == "stripe" and exc.value.status == 400
    with pytest.raises(WebhookSignatureError):
        verify_webhook(body, header, "whsec_other", now=1700000000)
    for bad in ("", "garbage", "t=1700000000", "t=abc,v1=00"):
        with pytest.raises(WebhookSignatureError):
            verify_webhook(body, bad, "whsec_test_secret", now=1700000000)
    rotated = f"t=1700000000,v1={'0' * 64},v1={header.split('v1=')[1]},v0=ignored"
    assert verify_webhook(body, rotated, "whsec_test_secret", now=1700000000)  # any v1 may match
    with pytest.raises(WebhookSignatureError, match="not a Stripe event"):
        not_event = b'{"hello":"world"}'
        verify_webhook(not_event, sign(not_event, WHSEC, 1700000000), WHSEC, now=1700000000)


async def test_retries_reuse_the_idempotency_key_after_5xx(env):
    fake, server, adapter, receiver = env
    server.faults.fail_next("5xx", times=2)
    customer = await adapter.create_customer(email="e@example.com")
    attempts = fake.requests[-3:]
    assert [r["path"] for r in attempts] == ["/v1/customers"] * 3
    assert len({r["idempotency_key"] for r in attempts}) == 1 and len(fake.customers) == 1
    server.faults.fail_next("5xx", times=3)  # more failures than retries
    with pytest.raises(ProviderError) as exc:
        await adapter.get_subscription("sub_x")
    assert (exc.value.status, exc.value.retryable) == (500, True) and "injected server error" in exc.value.message
    assert customer.id in fake.customers


async def test_rate_limit_timeout_malformed(env):
    fake, server, adapter, receiver = env
    server.faults.fail_next("429")
    with pytest.raises(ProviderError) as exc:  # the SDK does not retry 429; the caller may
        await adapter.create_customer(email="f@example.com")
    assert (exc.value.status, exc.value.retryable, exc.value.code) == (429, True, "rate_limit")
    server.faults.fail_next("malformed")
    with pytest.raises(ProviderError) as exc:
        await adapter.get_subscription("sub_x")
    assert "not JSON" in exc.value.message and exc.value.status == 200
    quick = StripeBilling(KEY, base_url=server.url, timeout=0.3, max_network_retries=0)
    server.faults.fail_next("timeout")
    with pytest.raises(ProviderError) as exc:
        await quick.get_subscription("sub_x")
    assert (exc.value.provider, exc.value.retryable, exc.value.message) == ("stripe", True, "timed out")
    await quick.close()
    patient = StripeBilling(KEY, base_url=server.url, timeout=0.3, max_network_retries=1, retry_delay=0.01)
    server.faults.fail_next("timeout")  # one timeout, then the retry succeeds
    assert (await patient.create_customer(email="g@example.com")).id.startswith("cus_")
    await patient.close()


async def test_bad_credentials_name_the_provider_not_the_key(env):
    fake, server, adapter, receiver = env
    wrong = StripeBilling("sk_test_wrong_key_abcdef123456", base_url=server.url, max_network_retries=0)
    with pytest.raises(ProviderError) as exc:
        await wrong.create_customer(email="h@example.com")
    await wrong.close()
    err = exc.value
    assert (err.provider, err.status, err.retryable) == ("stripe", 401, False)
    assert "credentials" in err.message and "Invalid API Key" in err.message
    assert "sk_test" not in str(err) and "3456" not in str(err) and "sk_test" not in repr(err)


async def test_unconnectable_base_url_is_retryable():
    adapter = StripeBilling(KEY, base_url="http://127.0.0.1:9", max_network_retries=0)
    with pytest.raises(ProviderError) as exc:
        await adapter.get_subscription("sub_x")
    assert exc.value.retryable and exc.value.provider == "stripe"
    await adapter.close()


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_parsers_against_documented_examples():
    customer = sb.parse_customer(load("customer.json"))
    assert (customer.id, customer.email, customer.metadata) == ("cus_Q1w2E3r4T5y6U7", "owner@example.com",
                                                                 {"organization_id": "42"})
    session = sb.parse_checkout_session(load("checkout_session.json"))
    assert session.url and session.url.startswith("https://checkout.stripe.com/")
    assert (session.mode, session.status, session.subscription, session.client_reference_id) == (
        "subscription", "open", None, "42")
    portal = sb.parse_portal_session(load("portal_session.json"))
    assert portal.url.startswith("https://billing.stripe.com/") and portal.customer == "cus_Q1w2E3r4T5y6U7"
    sub = sb.parse_subscription(load("subscription.json"))
    assert (sub.price_id, sub.current_period_end, sub.cancel_at_period_end, sub.cancel_at) == (
        "price_pro_monthly", 1767292100, True, 1767292100)
    item = sb.parse_invoice_item(load("invoice_item.json"))
    assert (item.amount, item.currency, item.invoice) == (1250, "usd", "in_1OvErAgE000000000000000")
    invoice = sb.parse_invoice(load("invoice_open.json"))
    assert (invoice.status, invoice.amount_due, invoice.subscription, invoice.billing_reason) == (
        "open", 1250, None, "manual")
    completed = sb.parse_event(load("event_checkout_session_completed.json"))
    linked = sb.parse_checkout_session(completed.object)
    assert (completed.type, linked.customer, linked.subscription, linked.payment_status) == (
        "checkout.session.completed", "cus_Q1w2E3r4T5y6U7", "sub_1SaMpLe0000000000000000", "paid")
    updated = sb.parse_event(load("event_subscription_updated.json"))
    assert updated.previous_attributes == {"cancel_at_period_end": False, "cancel_at": None}
    assert sb.parse_subscription(updated.object).current_period_end == 1767292100
    paid = sb.parse_invoice(sb.parse_event(load("event_invoice_paid.json")).object)
    assert (paid.subscription, paid.amount_paid, paid.billing_reason) == (
        "sub_1SaMpLe0000000000000000", 9900, "subscription_create")
    failed = sb.parse_invoice(sb.parse_event(load("event_invoice_payment_failed.json")).object)
    assert (failed.attempt_count, failed.next_payment_attempt, failed.status) == (1, 1767551400, "open")
    assert failed.hosted_invoice_url


def test_fake_parses_bracket_form_encoding():
    pairs = [("mode", "subscription"), ("line_items[0][price]", "price_1"), ("line_items[0][quantity]", "1"),
             ("line_items[1][price_data][unit_amount]", "5"), ("metadata[tenant_id]", "42"),
             ("subscription_data[metadata][plan]", "PRO"), ("expand[]", "customer")]
    assert parse_form(pairs) == {
        "mode": "subscription", "line_items": [{"price": "price_1", "quantity": "1"},
                                               {"price_data": {"unit_amount": "5"}}],
        "metadata": {"tenant_id": "42"}, "subscription_data": {"metadata": {"plan": "PRO"}}, "expand": ["customer"]}
