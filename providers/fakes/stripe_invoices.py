"""The Stripe fake's invoices: creation, lines, finalizing and payment (the overage flow and
subscription renewals). A mixin of StripeFake, which provides the stores and ``_emit``."""
from __future__ import annotations

import time
from typing import Any

from providers.fakes.stripe_wire import StripeError, _missing, mint


class InvoicesMixin:
    def _new_invoice(self, customer: str, params: dict[str, Any], reason: str,
                     sub: dict[str, Any] | None = None) -> dict[str, Any]:
        now = int(time.time())
        inv = {"id": mint("in_"), "object": "invoice", "customer": customer, "status": "draft", "amount_due": 0,
               "amount_paid": 0, "amount_remaining": 0, "subtotal": 0, "total": 0,
               "currency": params.get("currency", "usd"), "billing_reason": reason,
               "collection_method": params.get("collection_method", "charge_automatically"), "attempt_count": 0,
               "attempted": False, "next_payment_attempt": None, "hosted_invoice_url": None,
               "description": params.get("description"), "metadata": params.get("metadata") or {},
               "created": now, "period_start": now, "period_end": now, "livemode": False,
               "parent": {"type": "subscription_details", "quote_details": None,
                          "subscription_details": {"subscription": sub["id"], "metadata": sub["metadata"]}}
               if sub else None,
               "lines": {"object": "list", "data": [], "has_more": False},
               "status_transitions": {"finalized_at": None, "paid_at": None}}
        self.invoices[inv["id"]] = inv
        return inv

    def _add_line(self, inv: dict[str, Any], amount: int, currency: str, description: str | None,
                  period: dict[str, int]) -> None:
        inv["lines"]["data"].append({"id": mint("il_"), "object": "line_item", "amount": amount,
                                     "currency": currency, "description": description, "period": period})
        inv["currency"] = currency
        inv["subtotal"] = inv["total"] = inv["amount_due"] = inv["amount_remaining"] = sum(
            line["amount"] for line in inv["lines"]["data"])

    def _subscription_invoice(self, sub: dict[str, Any], reason: str) -> dict[str, Any]:
        inv = self._new_invoice(sub["customer"], {}, reason, sub)
        for item in sub["items"]["data"]:
            period = {"start": item["current_period_start"], "end": item["current_period_end"]}
            self._add_line(inv, item["price"]["unit_amount"] * item["quantity"], item["price"]["currency"],
                           f"{item['quantity']} × subscription", period)
        sub["latest_invoice"] = inv["id"]
        self._finalize(inv, None)
        return inv

    async def _create_invoice(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer(params.get("customer"))
        inv = self._new_invoice(customer, params, "manual")
        if params.get("pending_invoice_items_behavior") == "include":
            for ii in self.invoice_items.values():
                if ii["customer"] == customer and ii["invoice"] is None:
                    ii["invoice"] = inv["id"]
                    self._add_line(inv, ii["amount"], ii["currency"], ii["description"], ii["period"])
        return inv

    async def _create_invoice_item(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        customer = self._customer(params.get("customer"))
        if "pricing" in params:
            price = self._price(params["pricing"].get("price", ""), "pricing[price]")
            amount, currency = price["unit_amount"] * int(params.get("quantity", 1)), price["currency"]
        elif "amount" in params and "currency" in params:
            amount, currency = int(params["amount"]), params["currency"]
        else:
            raise StripeError(400, "Give amount and currency, or pricing[price].", param="amount")
        inv = None
        if params.get("invoice"):
            inv = self.invoices.get(params["invoice"])
            if inv is None or inv["customer"] != customer:
                raise _missing("invoice", params["invoice"], "invoice")
            if inv["status"] != "draft":
                raise StripeError(400, "You can only add invoice items to draft invoices.", param="invoice")
        now = int(time.time())
        ii = {"id": mint("ii_"), "object": "invoiceitem", "customer": customer, "amount": amount,
              "currency": currency, "description": params.get("description"), "invoice": inv["id"] if inv else None,
              "metadata": params.get("metadata") or {}, "date": now, "livemode": False,
              "period": {"start": now, "end": now}}
        self.invoice_items[ii["id"]] = ii
        if inv is not None:
            self._add_line(inv, amount, currency, ii["description"], ii["period"])
        return ii

    def _finalize(self, inv: dict[str, Any], req: dict[str, Any] | None) -> None:
        inv["status"] = "open"
        inv["status_transitions"]["finalized_at"] = int(time.time())
        inv["hosted_invoice_url"] = f"https://invoice.stripe.com/i/{inv['id']}"
        self._emit("invoice.finalized", inv, None, req)
        if inv["amount_due"] == 0:  # nothing to collect: Stripe marks it paid at once
            self._mark_paid(inv, req)

    async def _finalize_invoice(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        inv = await self._get(self.invoices, "invoice", req)
        if inv["status"] != "draft":
            raise StripeError(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                              code="invoice_not_editable")
        self._finalize(inv, req)
        return inv

    def _mark_paid(self, inv: dict[str, Any], req: dict[str, Any] | None) -> None:
        inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0, next_payment_attempt=None)
        inv["status_transitions"]["paid_at"] = int(time.time())
        self._emit("invoice.paid", inv, None, req)
        self._emit("invoice.payment_succeeded", inv, None, req)

    def _attempt_payment(self, inv: dict[str, Any], req: dict[str, Any] | None) -> bool:
        if inv["status"] != "open":
            return inv["status"] == "paid"
        inv["attempted"] = True
        inv["attempt_count"] += 1
        if inv["customer"] in self._declining:
            inv["next_payment_attempt"] = int(time.time()) + 3 * 86400
            self._emit("invoice.payment_failed", inv, None, req)
            return False
        self._mark_paid(inv, req)
        return True

    async def _pay_invoice(self, params: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
        inv = await self._get(self.invoices, "invoice", req)
        if inv["status"] == "paid":
            raise StripeError(400, "Invoice is already paid", code="invoice_already_paid")
        if inv["status"] != "open":
            raise StripeError(400, f"You can only pay open invoices; this one is {inv['status']}.",
                              code="invoice_not_editable")
        if not self._attempt_payment(inv, req):
            raise StripeError(402, "Your card was declined.", type="card_error", code="card_declined",
                              decline_code="generic_decline")
        return inv

    # ---------------------------------------------------------------- events and delivery
