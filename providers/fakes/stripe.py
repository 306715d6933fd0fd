"""A local Stripe (../shared/providers.md section 3): enough of /v1 for our billing flows.

``fake = StripeFake(api_key=..., webhook_secret="whsec_...", webhook_url=...)``; serve ``fake.app``
with ``FakeServer``. Like the real service it checks the Bearer ``sk_`` key, reads bracket
form-encoding (``line_items[0][price]``), mints prefixed ids, answers with Stripe's error envelope,
honours ``Idempotency-Key`` (same key and same parameters: the stored reply again, with
``Idempotent-Replayed: true``; same key, other parameters: ``idempotency_error``), and POSTs signed
events (``Stripe-Signature: t=..,v1=..``) to ``webhook_url``.

Test / sandbox API: ``add_price``, ``decline_cards(customer)``, ``await complete_checkout(cs_id)``
(the customer paid: checkout.session.completed, customer.subscription.created, invoice.paid),
``await renew_subscription(sub_id)`` (a new period: invoice.paid or invoice.payment_failed),
``await retry_invoice_payment(in_id)`` (Stripe's own retry of an open invoice),
``await resend(evt_id)`` (same event again, for dedup tests), ``await flush()`` (wait for
deliveries), ``events``, ``deliveries``, ``requests`` and the object stores. The checkout and portal
``url``s point at this fake (``/_sandbox/...``): opening the checkout one completes it and
redirects to ``success_url``, so sandbox mode works in a browser.
Simplifications: a month is 30 days; every card pays unless ``decline_cards`` was called.
"""
from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from providers.fakes.server import FAULTS, make_app
from providers.fakes.stripe_invoices import InvoicesMixin
from providers.fakes.stripe_wire import StripeError, _missing, _truthy, mint, parse_form, sign  # noqa: F401 - re-exported

API_VERSION = "2026-10-28.endive"
Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


class StripeFake(InvoicesMixin):
    def __init__(self, *, api_key: str = "sk_test_sandbox", webhook_secret: str = "whsec_sandbox",
                 webhook_url: str | None = None, auto_prices: bool = False) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.auto_prices = auto_prices  # sandbox: accept any price_... id as a $0 monthly price
        self.customers: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.invoice_items: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []  # {event, type, status | error}
        self.requests: list[dict[str, Any]] = []  # {method, path, idempotency_key}, faulted ones included
        self._declining: set[str] = set()
        self._session_extras: dict[str, dict[str, Any]] = {}
        self._idempotency: dict[str, tuple[tuple[str, str, str], int, dict[str, Any]]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.app = make_app()
        self.app.middlewares.insert(0, self._fault_middleware)  # before the shared one: Stripe's shapes
        r = self.app.router
        r.add_post("/v1/customers", self._api(self._create_customer))
        r.add_get("/v1/customers/{id}", self._api(lambda p, rq: self._get(self.customers, "customer", rq)))
        r.add_post("/v1/checkout/sessions", self._api(self._create_session))
        r.add_get("/v1/checkout/sessions/{id}", self._api(lambda p, rq: self._get(self.sessions, "checkout.session", rq)))
        r.add_post("/v1/billing_portal/sessions", self._api(self._create_portal))
        r.add_get("/v1/subscriptions/{id}", self._api(lambda p, rq: self._get(self.subscriptions, "subscription", rq)))
        r.add_post("/v1/subscriptions/{id}", self._api(self._update_subscription))
        r.add_delete("/v1/subscriptions/{id}", self._api(self._cancel_subscription))
        r.add_post("/v1/invoiceitems", self._api(self._create_invoice_item))
        r.add_post("/v1/invoices", self._api(self._create_invoice))
        r.add_get("/v1/invoices/{id}", self._api(lambda p, rq: self._get(self.invoices, "invoice", rq)))
        r.add_post("/v1/invoices/{id}/finalize", self._api(self._finalize_invoice))
        r.add_post("/v1/invoices/{id}/pay", self._api(self._pay_invoice))
        r.add_route("*", "/v1/{tail:.*}", self._api(self._unknown))
        r.add_get("/_sandbox/checkout/{id}", self._sandbox_checkout)
        r.add_get("/_sandbox/portal/{id}", self._sandbox_portal)

    # ---------------------------------------------------------------- test / sandbox API

    def add_price(self, price_id: str, *, unit_amount: int, currency: str = "usd",
                  interval: str | None = "month") -> dict[str, Any]:
        self.prices[price_id] = {
            "id": price_id, "object": "price", "active": True, "currency": currency, "unit_amount": unit_amount,
            "type": "recurring" if interval else "one_time", "product": mint("prod_", 14),
            "recurring": {"interval": interval, "interval_count": 1} if interval else None}
        return self.prices[price_id]

    def decline_cards(self, customer_id: str, decline: bool = True) -> None:
        (self._declining.add if decline else self._declining.discard)(customer_id)

    async def complete_checkout(self, session_id: str) -> dict[str, Any]:
        """As if the customer paid on the hosted page; emits the events Stripe sends, then waits for delivery."""
        s = self.sessions[session_id]
        if s["status"] != "open":
            raise ValueError(f"checkout session {session_id} is {s['status']}")
        if s["customer"] is None:
            s["customer"] = self._new_customer({"email": s["customer_email"]})["id"]
        s.update(status="complete", payment_status="paid", url=None,
                 customer_details={"email": self.customers[s["customer"]].get("email")})
        if s["mode"] == "subscription":
            sub = self._new_subscription(s)
            s["subscription"] = sub["id"]
            self._emit("checkout.session.completed", s)
            self._emit("customer.subscription.created", sub)
            invoice = self._subscription_invoice(sub, "subscription_create")
            self._attempt_payment(invoice, None)
        else:
            self._emit("checkout.session.completed", s)
        await self.flush()
        return s

    async def renew_subscription(self, sub_id: str) -> dict[str, Any]:
        """Start the next period and bill it: invoice.paid, or invoice.payment_failed and past_due."""
        sub = self.subscriptions[sub_id]
        item = sub["items"]["data"][0]
        length = item["current_period_end"] - item["current_period_start"]
        item["current_period_start"] = item["current_period_end"]
        item["current_period_end"] += length
        invoice = self._subscription_invoice(sub, "subscription_cycle")
        if not self._attempt_payment(invoice, None) and sub["status"] != "past_due":
            sub["status"] = "past_due"
            self._emit("customer.subscription.updated", sub, {"status": "active"})
        await self.flush()
        return invoice

    async def retry_invoice_payment(self, invoice_id: str) -> dict[str, Any]:
        """Stripe's own later attempt on an open invoice (smart retries): invoice.paid or .payment_failed."""
        self._attempt_payment(self.invoices[invoice_id], None)
        await self.flush()
        return self.invoices[invoice_id]

    async def resend(self, event_id: str) -> None:
        """Deliver the same event (same id and body) again, as Stripe does on retries."""
        self._deliver_later(event_id)
        await self.flush()

    async def flush(self) -> None:
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        if self._session is not None:
            await self._session.close()

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events.values() if e["type"] == event_type]

    # ---------------------------------------------------------------- HTTP plumbing

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append({"method": request.method, "path": request.path,
                              "idempotency_key": request.headers.get("Idempotency-Key")})
        if len(self.requests) > 2000:  # sandbox mode runs for days: keep the recent history only
            del self.requests[:1000]
        faults = request.app[FAULTS]
        fault = faults.take()
        if fault == "5xx":
            return self._error(StripeError(500, "fake: injected server error", type="api_error"))
        if fault == "429":
            return self._error(StripeError(429, "fake: injected rate limit, too many requests", code="rate_limit"))
        if fault == "timeout":
            await asyncio.sleep(faults.timeout_seconds)
        if fault == "malformed":
            return web.Response(status=200, body=b"<html>not json", content_type="text/html")
        return await handler(request)

    @staticmethod
    def _error(err: StripeError) -> web.Response:
        return web.json_response({"error": err.body}, status=err.status, headers={"Request-Id": mint("req_", 14)})

    def _api(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return self._error(StripeError(401, "You did not provide an API key."))
            key = auth[len("Bearer "):]
            if key != self.api_key or not key.startswith("sk_"):
                # Stripe echoes a masked key; adapters must scrub it from their messages.
                return self._error(StripeError(401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}",
                                               code="api_key_invalid"))
            pairs = (await request.post()).items() if request.method == "POST" else request.query.items()
            params = parse_form(pairs)
            idem = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            fingerprint = (request.method, request.path, json.dumps(params, sort_keys=True))
            if idem and idem in self._idempotency:
                stored, status, body = self._idempotency[idem]
                if stored != fingerprint:
                    return self._error(StripeError(400, "Keys for idempotent requests can only be used with the "
                                                   f"same parameters they were first used with; '{idem}' was not.",
                                                   type="idempotency_error"))
                return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
            req = {"id": mint("req_", 14), "idempotency_key": idem, "match": request.match_info,
                   "base": f"{request.scheme}://{request.host}", "method": request.method, "path": request.path}
            try:
                status, body = 200, await handler(params, req)
            except StripeError as err:
                status, body = err.status, {"error": err.body}
            if idem and (status == 200 or status == 402):  # Stripe keeps replies of requests that ran
                self._idempotency[idem] = (fingerprint, status, copy.deepcopy(body))
            return web.json_response(body, status=status, headers={"Request-Id": req["id"]})
        return endpoint

    async def _unknown(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        raise StripeError(404, f"Unrecognized request URL ({req['method']}: {req['path']}).")

    @staticmethod
    async def _get(store: dict[str, dict[str, Any]], kind: str, req: dict[str, Any]) -> dict[str, Any]:
        ident = req["match"]["id"]
        if ident not in store:
            raise _missing(kind, ident)
        return store[ident]

    # ---------------------------------------------------------------- customers, checkout, portal

    def _new_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        c = {"id": mint("cus_", 14), "object": "customer", "created": int(time.time()), "livemode": False,
             "email": params.get("email"), "name": params.get("name"), "metadata": params.get("metadata") or {}}
        self.customers[c["id"]] = c
        return c

    async def _create_customer(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        return self._new_customer(params)

    def _customer(self, ident: Any, param: str = "customer") -> str:
        if not ident:
            raise StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)
        if ident not in self.customers:
            raise _missing("customer", ident, param)
        return ident

    def _price(self, ident: str, param: str) -> dict[str, Any]:
        if ident not in self.prices:
            if not (self.auto_prices and ident.startswith("price_")):
                raise _missing("price", ident, param)
            self.add_price(ident, unit_amount=0)
        return self.prices[ident]

    async def _create_session(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode not in ("payment", "subscription"):
            raise StripeError(400, "Invalid mode: must be one of payment, setup, or subscription.", param="mode")
        if params.get("customer") and params.get("customer_email"):
            raise StripeError(400, "You may only specify one of these parameters: customer, customer_email.",
                              param="customer_email")
        customer = self._customer(params["customer"]) if params.get("customer") else None
        items = params.get("line_items") or []
        if not items:
            raise StripeError(400, "Missing required param: line_items.", code="parameter_missing", param="line_items")
        total = 0
        for i, item in enumerate(items):
            if "price" in item:
                price = self._price(item["price"], f"line_items[{i}][price]")
                if (price["type"] == "recurring") != (mode == "subscription"):
                    raise StripeError(400, f"In `{mode}` mode every price must be "
                                      f"{'recurring' if mode == 'subscription' else 'one-time'}.",
                                      param=f"line_items[{i}][price]")
                item["unit_amount"], item["currency"] = price["unit_amount"], price["currency"]
            else:
                data = item.get("price_data") or {}
                item["unit_amount"], item["currency"] = int(data.get("unit_amount", 0)), data.get("currency", "usd")
            total += item["unit_amount"] * int(item.get("quantity", 1))
        sid = mint("cs_test_", 58)
        s = {"id": sid, "object": "checkout.session", "mode": mode, "status": "open", "payment_status": "unpaid",
             "url": f"{req['base']}/_sandbox/checkout/{sid}", "customer": customer,
             "customer_email": params.get("customer_email"), "customer_details": None, "subscription": None,
             "client_reference_id": params.get("client_reference_id"), "metadata": params.get("metadata") or {},
             "success_url": params.get("success_url"), "cancel_url": params.get("cancel_url"),
             "amount_total": total, "currency": items[0]["currency"], "created": int(time.time()), "livemode": False,
             "expires_at": int(time.time()) + 86400}
        self.sessions[sid] = s
        # Kept aside (not part of the reply) to build the subscription when the customer pays.
        self._session_extras[sid] = {"items": items, "subscription_data": params.get("subscription_data") or {}}
        return s

    async def _create_portal(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer(params.get("customer"))
        pid = mint("bps_")
        p = {"id": pid, "object": "billing_portal.session", "customer": customer, "livemode": False,
             "return_url": params.get("return_url"), "url": f"{req['base']}/_sandbox/portal/{pid}",
             "created": int(time.time())}
        self.portal_sessions[pid] = p
        return p

    async def _sandbox_checkout(self, request: web.Request) -> web.StreamResponse:
        s = self.sessions.get(request.match_info["id"])
        if s is None or s["status"] != "open":
            return web.Response(status=404, text="This checkout session is no longer available.")
        await self.complete_checkout(s["id"])
        target = (s["success_url"] or "/").replace("{CHECKOUT_SESSION_ID}", s["id"])
        raise web.HTTPSeeOther(target)

    async def _sandbox_portal(self, request: web.Request) -> web.StreamResponse:
        p = self.portal_sessions.get(request.match_info["id"])
        if p is None:
            return web.Response(status=404, text="Unknown portal session.")
        raise web.HTTPSeeOther(p["return_url"] or "/")

    # ---------------------------------------------------------------- subscriptions

    def _new_subscription(self, session: dict[str, Any]) -> dict[str, Any]:
        extras = self._session_extras[session["id"]]
        now = int(time.time())
        sub_id = mint("sub_")
        items = []
        for item in extras["items"]:
            price = self.prices[item["price"]]
            days = 365 if price["recurring"]["interval"] == "year" else 30
            items.append({"id": mint("si_", 14), "object": "subscription_item", "price": price, "subscription": sub_id,
                          "quantity": int(item.get("quantity", 1)), "current_period_start": now,
                          "current_period_end": now + days * 86400})
        sub = {"id": sub_id, "object": "subscription", "customer": session["customer"], "status": "active",
               "cancel_at_period_end": False, "cancel_at": None, "canceled_at": None, "ended_at": None,
               "created": now, "start_date": now, "collection_method": "charge_automatically",
               "currency": session["currency"], "latest_invoice": None, "livemode": False,
               "metadata": extras["subscription_data"].get("metadata") or {},
               "items": {"object": "list", "data": items, "has_more": False,
                         "url": f"/v1/subscription_items?subscription={sub_id}"}}
        self.subscriptions[sub_id] = sub
        return sub

    async def _update_subscription(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        sub = await self._get(self.subscriptions, "subscription", req)
        if sub["status"] == "canceled":
            raise StripeError(400, "A canceled subscription can only update its cancellation_details and metadata.")
        previous: dict[str, Any] = {}
        if "cancel_at_period_end" in params:
            cancel = _truthy(params["cancel_at_period_end"])
            if cancel != sub["cancel_at_period_end"]:
                previous = {"cancel_at_period_end": sub["cancel_at_period_end"], "cancel_at": sub["cancel_at"]}
                sub["cancel_at_period_end"] = cancel
                sub["cancel_at"] = sub["items"]["data"][0]["current_period_end"] if cancel else None
        if "metadata" in params:
            previous["metadata"] = dict(sub["metadata"])
            sub["metadata"].update(params["metadata"])
        if previous:
            self._emit("customer.subscription.updated", sub, previous, req)
        return sub

    async def _cancel_subscription(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        sub = await self._get(self.subscriptions, "subscription", req)
        if sub["status"] == "canceled":
            raise _missing("subscription", sub["id"])  # unconfirmed: what Stripe answers to a second DELETE
        now = int(time.time())
        sub.update(status="canceled", canceled_at=now, ended_at=now)
        self._emit("customer.subscription.deleted", sub, None, req)
        return sub

    # ---------------------------------------------------------------- invoices

    def _emit(self, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None,
              req: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}  # a snapshot, as Stripe sends
        if previous:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {"id": mint("evt_"), "object": "event", "type": event_type, "created": int(time.time()),
                 "api_version": API_VERSION, "livemode": False, "pending_webhooks": 1 if self.webhook_url else 0,
                 "request": {"id": req["id"] if req else None,
                             "idempotency_key": req["idempotency_key"] if req else None},
                 "data": data}
        self.events[event["id"]] = event
        self._deliver_later(event["id"])
        return event

    def _deliver_later(self, event_id: str) -> None:
        # Stripe delivers after replying to the API call, so delivery never blocks the caller.
        if self.webhook_url:
            task = asyncio.get_running_loop().create_task(self._deliver(event_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _deliver(self, event_id: str) -> None:
        event = self.events[event_id]
        body = json.dumps(event, indent=2).encode()
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                   "Stripe-Signature": sign(body, self.webhook_secret, int(time.time()))}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        record: dict[str, Any] = {"event": event_id, "type": event["type"]}
        try:
            async with self._session.post(self.webhook_url, data=body, headers=headers) as resp:  # type: ignore[arg-type]
                record["status"] = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            record["error"] = type(exc).__name__
        self.deliveries.append(record)
