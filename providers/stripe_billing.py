"""Stripe adapter: customers, Checkout, billing portal, subscriptions, overage invoices, webhooks.

Built on the official ``stripe`` SDK (16.x): a ``StripeClient`` with the async ``AIOHTTPClient``,
created inside the running event loop (``StripeBilling(...)``, then ``await close()``). See
../shared/providers.md section 3 for the contract this follows.

Environment the wiring should read (this module reads none itself):
- ``STRIPE_SECRET_KEY``: the ``sk_...`` API key. Unset means sandbox mode (the fake).
- ``STRIPE_WEBHOOK_SECRET``: the ``whsec_...`` endpoint secret, for ``verify_webhook``.
- ``STRIPE_BASE_URL``: optional; default ``https://api.stripe.com`` (``DEFAULT_BASE_URL``).

Retries: ``StripeClient`` makes none unless told, so we pass ``max_network_retries`` explicitly.
The SDK then retries connection errors, timeouts, 409 and 5xx, reusing the same
``Idempotency-Key`` (it puts one on every POST), so a retried POST cannot create twice. It does
not retry 429; that surfaces as a retryable ProviderError for the caller's own backoff.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import aiohttp
import stripe

from providers.errors import ProviderError

PROVIDER = "stripe"
DEFAULT_BASE_URL = "https://api.stripe.com"
WEBHOOK_TOLERANCE = 300  # seconds; Stripe's own default (stripe.Webhook.DEFAULT_TOLERANCE)

# Stripe echoes a masked key in auth errors ("sk_test_****1234"); we keep even that out of messages.
_SECRET_RE = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")


class WebhookSignatureError(ProviderError):
    """A webhook whose Stripe-Signature does not match, is stale, or is missing: answer 400."""

    def __init__(self, message: str) -> None:
        super().__init__(PROVIDER, message, status=400, retryable=False, code="signature_verification_failed")


# ---- typed results: only what callers need; ``raw`` keeps the whole object for the rest ----

@dataclass(frozen=True)
class Customer:
    id: str
    email: str | None
    name: str | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None  # redirect the user here; present while the session is open
    mode: str  # subscription | payment
    status: str | None  # open | complete | expired
    payment_status: str | None  # paid | unpaid | no_payment_required
    customer: str | None
    subscription: str | None  # null until completed
    client_reference_id: str | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class PortalSession:
    id: str
    url: str
    customer: str
    return_url: str | None


@dataclass(frozen=True)
class Subscription:
    id: str
    customer: str
    status: str
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    price_id: str | None  # items.data[0].price.id
    current_period_start: int | None  # lives on the item in current API versions
    current_period_end: int | None
    latest_invoice: str | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class Invoice:
    id: str
    customer: str
    status: str | None  # draft | open | paid | uncollectible | void
    amount_due: int
    amount_paid: int
    total: int
    currency: str
    billing_reason: str | None
    subscription: str | None  # parent.subscription_details.subscription
    attempt_count: int
    next_payment_attempt: int | None
    hosted_invoice_url: str | None
    metadata: dict[str, str]


@dataclass(frozen=True)
class InvoiceItem:
    id: str
    customer: str
    amount: int
    currency: str
    invoice: str | None
    description: str | None


@dataclass(frozen=True)
class OverageCharge:
    item: InvoiceItem
    invoice: Invoice  # after finalize and the payment attempt
    payment_error: str | None = None  # the decline message when the payment attempt failed


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    type: str
    created: int
    object: dict[str, Any]  # data.object
    previous_attributes: dict[str, Any] = field(default_factory=dict)  # on *.updated events


# ---- parsers: plain dicts (from the SDK's to_dict() or a webhook body) to typed results ----

def _id(value: Any) -> str | None:
    """A reference that may be an id or an expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value


def parse_customer(d: Mapping[str, Any]) -> Customer:
    return Customer(id=d["id"], email=d.get("email"), name=d.get("name"), metadata=dict(d.get("metadata") or {}))


def parse_checkout_session(d: Mapping[str, Any]) -> CheckoutSession:
    return CheckoutSession(
        id=d["id"], url=d.get("url"), mode=d["mode"], status=d.get("status"), payment_status=d.get("payment_status"),
        customer=_id(d.get("customer")), subscription=_id(d.get("subscription")),
        client_reference_id=d.get("client_reference_id"), metadata=dict(d.get("metadata") or {}))


def parse_portal_session(d: Mapping[str, Any]) -> PortalSession:
    return PortalSession(id=d["id"], url=d["url"], customer=_id(d["customer"]) or "", return_url=d.get("return_url"))


def parse_subscription(d: Mapping[str, Any]) -> Subscription:
    items = (d.get("items") or {}).get("data") or [{}]
    first = items[0]
    return Subscription(
        id=d["id"], customer=_id(d["customer"]) or "", status=d["status"],
        cancel_at_period_end=bool(d.get("cancel_at_period_end")), cancel_at=d.get("cancel_at"),
        canceled_at=d.get("canceled_at"), ended_at=d.get("ended_at"),
        price_id=_id((first.get("price") or {})), current_period_start=first.get("current_period_start"),
        current_period_end=first.get("current_period_end"), latest_invoice=_id(d.get("latest_invoice")),
        metadata=dict(d.get("metadata") or {}))


def parse_invoice(d: Mapping[str, Any]) -> Invoice:
    parent = d.get("parent") or {}
    sub_details = parent.get("subscription_details") or {}
    return Invoice(
        id=d["id"], customer=_id(d["customer"]) or "", status=d.get("status"), amount_due=int(d.get("amount_due") or 0),
        amount_paid=int(d.get("amount_paid") or 0), total=int(d.get("total") or 0), currency=d.get("currency") or "",
        billing_reason=d.get("billing_reason"), subscription=_id(sub_details.get("subscription")),
        attempt_count=int(d.get("attempt_count") or 0), next_payment_attempt=d.get("next_payment_attempt"),
        hosted_invoice_url=d.get("hosted_invoice_url"), metadata=dict(d.get("metadata") or {}))


def parse_invoice_item(d: Mapping[str, Any]) -> InvoiceItem:
    return InvoiceItem(id=d["id"], customer=_id(d["customer"]) or "", amount=int(d.get("amount") or 0),
                       currency=d.get("currency") or "", invoice=_id(d.get("invoice")), description=d.get("description"))


def parse_event(d: Mapping[str, Any]) -> WebhookEvent:
    data = d.get("data") or {}
    return WebhookEvent(id=d["id"], type=d["type"], created=int(d["created"]), object=dict(data.get("object") or {}),
                        previous_attributes=dict(data.get("previous_attributes") or {}))


# ---- webhook verification (what the gateway's /api/webhooks/stripe uses) ----

def verify_webhook(payload: bytes, sig_header: str | None, secret: str, now: float | None = None,
                   tolerance: int = WEBHOOK_TOLERANCE) -> dict[str, Any]:
    """The event as a dict, after checking ``Stripe-Signature`` over the RAW body.

    The HMAC check is the SDK's own (any ``v1`` matching, constant time); the age check is ours so
    that ``now`` can be injected in tests. Raises WebhookSignatureError (a ProviderError).
    """
    try:
        # tolerance=None: the SDK skips its clock check; we apply ours below with `now`.
        stripe.WebhookSignature.verify_header(payload, sig_header, secret, tolerance=None)
    except stripe.SignatureVerificationError as exc:
        raise WebhookSignatureError(f"webhook signature rejected: {exc.user_message}") from None
    except (UnicodeDecodeError, ValueError):
        raise WebhookSignatureError("webhook signature rejected: unreadable body or header") from None
    timestamp = int(next(p.split("=", 1)[1] for p in (sig_header or "").split(",") if p.startswith("t=")))
    current = time.time() if now is None else now
    if tolerance and timestamp < current - tolerance:
        raise WebhookSignatureError(f"webhook signature rejected: timestamp older than {tolerance} s")
    try:
        event = json.loads(payload)
    except ValueError:
        raise WebhookSignatureError("webhook body is not JSON") from None
    if not isinstance(event, dict) or event.get("object") != "event" or not event.get("id"):
        raise WebhookSignatureError("webhook body is not a Stripe event")
    return event


# ---- errors ----

def _scrub(message: str) -> str:
    return _SECRET_RE.sub("[redacted]", message or "")[:500]


def to_provider_error(exc: stripe.StripeError) -> ProviderError:
    """One ProviderError for any SDK failure: the provider's message, never our key."""
    status = exc.http_status
    code = exc.code
    message = _scrub(exc.user_message or type(exc).__name__)
    if isinstance(exc, stripe.APIConnectionError):
        timed_out = isinstance(exc.__cause__, (asyncio.TimeoutError, TimeoutError))
        return ProviderError(PROVIDER, "timed out" if timed_out else "could not connect", retryable=True)
    if isinstance(exc, stripe.AuthenticationError):
        return ProviderError(PROVIDER, f"rejected our credentials ({message})", status=status, code=code)
    if isinstance(exc, stripe.PermissionError):
        return ProviderError(PROVIDER, f"refused this operation for our key ({message})", status=status, code=code)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return ProviderError(PROVIDER, f"rate limited ({message})", status=status, retryable=True,
                             code=code or "rate_limit")
    if isinstance(exc, stripe.IdempotencyError):
        return ProviderError(PROVIDER, message, status=status, code=code or "idempotency_error")
    if status is not None and 200 <= status < 300:  # the SDK could not decode a 2xx body
        return ProviderError(PROVIDER, "replied with something that is not JSON", status=status, retryable=True)
    if isinstance(exc, stripe.APIError) and message.startswith("Invalid response"):
        message = f"HTTP {status} with an unexpected body"  # not Stripe's envelope: don't echo the body
    retryable = status is None or status >= 500 or status == 409
    return ProviderError(PROVIDER, message, status=status, retryable=retryable, code=code)


class _HttpClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp client with a configurable first retry delay (the SDK fixes 0.5 s)."""

    def __init__(self, *, retry_delay: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retry_delay = retry_delay

    def _sleep_time_seconds(self, num_retries: int) -> float:
        if self._retry_delay is None:
            return super()._sleep_time_seconds(num_retries)
        return min(self._retry_delay * 2 ** (num_retries - 1), self.MAX_DELAY)


class StripeBilling:
    """The Stripe operations the gateway needs. Construct inside the running loop."""

    def __init__(self, secret_key: str, *, base_url: str | None = None, timeout: float = 20.0,
                 max_network_retries: int = 2, retry_delay: float | None = None) -> None:
        self._http = _HttpClient(retry_delay=retry_delay, timeout=aiohttp.ClientTimeout(total=timeout))
        addresses: Any = {"api": base_url.rstrip("/")} if base_url else None
        self._client = stripe.StripeClient(secret_key, http_client=self._http, base_addresses=addresses,
                                           max_network_retries=max_network_retries)
        self._v1 = self._client.v1

    async def close(self) -> None:
        # StripeClient has no close of its own; the aiohttp session lives in the http client.
        await self._http.close_async()

    async def _call(self, coro: Any) -> dict[str, Any]:
        try:
            obj = await coro
        except stripe.StripeError as exc:
            raise to_provider_error(exc) from None
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            # The SDK wraps errors while connecting, not while reading the body; these are the rest.
            timed_out = isinstance(exc, asyncio.TimeoutError)
            raise ProviderError(PROVIDER, "timed out" if timed_out else "connection lost", retryable=True) from None
        return obj.to_dict()

    @staticmethod
    def _opts(idempotency_key: str | None) -> dict[str, Any]:
        return {"idempotency_key": idempotency_key} if idempotency_key else {}

    # -- customers, checkout, portal --

    async def create_customer(self, *, email: str | None = None, name: str | None = None,
                              metadata: Mapping[str, str] | None = None,
                              idempotency_key: str | None = None) -> Customer:
        params: dict[str, Any] = {k: v for k, v in {"email": email, "name": name}.items() if v}
        if metadata:
            params["metadata"] = dict(metadata)
        return parse_customer(await self._call(self._v1.customers.create_async(
            params, options=self._opts(idempotency_key))))  # type: ignore[arg-type]

    async def create_subscription_checkout(self, *, price_id: str, success_url: str, cancel_url: str,
                                           customer: str | None = None, customer_email: str | None = None,
                                           client_reference_id: str | None = None,
                                           metadata: Mapping[str, str] | None = None,
                                           allow_promotion_codes: bool = False,
                                           idempotency_key: str | None = None) -> CheckoutSession:
        """A Checkout session for a plan's recurring price; metadata is copied onto the subscription too."""
        params = self._checkout_params("subscription", [{"price": price_id, "quantity": 1}], success_url,
                                       cancel_url, customer, customer_email, client_reference_id, metadata)
        if metadata:
            params["subscription_data"] = {"metadata": dict(metadata)}
        if allow_promotion_codes:
            params["allow_promotion_codes"] = True
        return await self._create_checkout(params, idempotency_key)

    async def create_payment_checkout(self, *, success_url: str, cancel_url: str, price_id: str | None = None,
                                      amount: int | None = None, currency: str = "usd",
                                      product_name: str | None = None, quantity: int = 1,
                                      customer: str | None = None, customer_email: str | None = None,
                                      client_reference_id: str | None = None,
                                      metadata: Mapping[str, str] | None = None,
                                      idempotency_key: str | None = None) -> CheckoutSession:
        """A one-off payment: either an existing price, or an inline amount (minor units) and product name."""
        if price_id:
            item: dict[str, Any] = {"price": price_id, "quantity": quantity}
        elif amount is not None and product_name:
            item = {"price_data": {"currency": currency, "unit_amount": amount,
                                   "product_data": {"name": product_name}}, "quantity": quantity}
        else:
            raise ValueError("give price_id, or amount and product_name")
        params = self._checkout_params("payment", [item], success_url, cancel_url, customer, customer_email,
                                       client_reference_id, metadata)
        return await self._create_checkout(params, idempotency_key)

    @staticmethod
    def _checkout_params(mode: str, items: list[dict[str, Any]], success_url: str, cancel_url: str,
                         customer: str | None, customer_email: str | None, client_reference_id: str | None,
                         metadata: Mapping[str, str] | None) -> dict[str, Any]:
        params: dict[str, Any] = {"mode": mode, "line_items": items, "success_url": success_url,
                                  "cancel_url": cancel_url}
        if customer:
            params["customer"] = customer
        elif customer_email:
            params["customer_email"] = customer_email
        if client_reference_id:
            params["client_reference_id"] = client_reference_id
        if metadata:
            params["metadata"] = dict(metadata)
        return params

    async def _create_checkout(self, params: dict[str, Any], idempotency_key: str | None) -> CheckoutSession:
        return parse_checkout_session(await self._call(self._v1.checkout.sessions.create_async(
            params, options=self._opts(idempotency_key))))  # type: ignore[arg-type]

    async def create_portal_session(self, *, customer: str, return_url: str) -> PortalSession:
        return parse_portal_session(await self._call(self._v1.billing_portal.sessions.create_async(
            {"customer": customer, "return_url": return_url})))

    # -- subscriptions --

    async def get_subscription(self, subscription_id: str) -> Subscription:
        return parse_subscription(await self._call(self._v1.subscriptions.retrieve_async(subscription_id)))

    async def set_cancel_at_period_end(self, subscription_id: str, cancel: bool = True) -> Subscription:
        """Cancel at the end of the paid period (True), or undo that (False)."""
        return parse_subscription(await self._call(self._v1.subscriptions.update_async(
            subscription_id, {"cancel_at_period_end": cancel})))

    async def cancel_subscription_now(self, subscription_id: str) -> Subscription:
        return parse_subscription(await self._call(self._v1.subscriptions.cancel_async(subscription_id)))

    # -- overage --

    async def charge_overage(self, *, customer: str, amount: int, currency: str, description: str,
                             idempotency_key: str, metadata: Mapping[str, str] | None = None) -> OverageCharge:
        """Bill ``amount`` (minor units) now on its own invoice: create, attach the item, finalize, pay.

        ``idempotency_key`` comes from OUR record (e.g. ``f"overage-{org_id}-{week_start}"``); each step
        uses it with its own suffix, so re-running the whole flow (after a crash or a timeout) replays
        Stripe's stored replies instead of billing twice. Stripe keeps keys for at least 24 hours.
        The item is attached to this invoice (``invoice=``) so other pending items are not swept in.
        A declined card is not an exception: the invoice stays open, Stripe retries it, and
        ``invoice.payment_failed`` arrives by webhook; ``payment_error`` carries the decline message.
        """
        meta = {**(metadata or {}), "idempotency_key": idempotency_key}
        invoice = await self._call(self._v1.invoices.create_async({
            "customer": customer, "collection_method": "charge_automatically", "auto_advance": True,
            "pending_invoice_items_behavior": "exclude", "description": description, "metadata": meta,
        }, options={"idempotency_key": f"{idempotency_key}:invoice"}))
        item = await self._call(self._v1.invoice_items.create_async({
            "customer": customer, "invoice": invoice["id"], "amount": amount, "currency": currency,
            "description": description, "metadata": meta,
        }, options={"idempotency_key": f"{idempotency_key}:item"}))
        invoice = await self._call(self._v1.invoices.finalize_invoice_async(
            invoice["id"], options={"idempotency_key": f"{idempotency_key}:finalize"}))
        payment_error = None
        if invoice.get("status") == "open":
            try:
                invoice = await self._call(self._v1.invoices.pay_async(
                    invoice["id"], options={"idempotency_key": f"{idempotency_key}:pay"}))
            except ProviderError as exc:
                if exc.status != 402:  # only a decline is an expected outcome
                    raise
                invoice = await self._call(self._v1.invoices.retrieve_async(invoice["id"]))
                # On a re-run the replayed decline may be stale: Stripe's own retry may have paid since.
                payment_error = None if invoice.get("status") == "paid" else exc.message
        return OverageCharge(item=parse_invoice_item(item), invoice=parse_invoice(invoice), payment_error=payment_error)
