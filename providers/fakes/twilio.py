"""A local Twilio for tests and sandbox mode (providers.md section 2).

Serves, on one host, what the adapter calls on four: the 2010 REST API (available numbers,
incoming numbers, messages), TrustHub v1 (customer profiles, trust products) and Messaging v1
(brand registrations, messaging services, their phone numbers, US A2P campaigns). Like Twilio it
checks HTTP Basic ``AccountSid:AuthToken``, reads form-encoded PascalCase params, answers snake_case
JSON with the real list shapes (2010: exactly one records key plus paging keys; v1: ``meta``) and
error body ``{code, message, more_info, status}``, and mints sids as two letters + 32 hex.

Callbacks are signed like Twilio's (X-Twilio-Signature: HMAC-SHA1 with the auth token over the
URL plus the sorted POST params), computed here independently of the SDK so the gateway's
validator is really exercised:
- after a send, the message's StatusCallback gets queued, sent, then delivered (or undelivered
  with an ErrorCode for numbers listed in ``undeliverable``);
- ``await fake.send_inbound_sms(...)`` posts an inbound SMS to the number's SmsUrl (or a given URL).

Test API: ``TwilioFake(account_sid, auth_token)``; ``fake.app`` for FakeServer; state in
``numbers``, ``messages``, ``bundles``, ``brands``, ``services``, ``campaigns``; ``set_status(sid,
status)`` to move an A2P object along (as Twilio's reviewers would); ``deliveries`` (every callback
sent, with the reply it got); ``await settle()`` waits for pending callbacks; ``await close()``.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from providers.fakes.server import make_app
from providers.fakes.twilio_a2p import add_a2p_routes

E164_US = re.compile(r"^\+1[2-9]\d{9}$")
AREAS = {  # a few real area codes, so search results look like Twilio's
    "212": ("New York", "NY", "10001"), "312": ("Chicago", "IL", "60601"), "415": ("San Francisco", "CA", "94105"),
    "512": ("Austin", "TX", "78701"), "206": ("Seattle", "WA", "98101"), "617": ("Boston", "MA", "02108"),
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FAKE: web.AppKey["TwilioFake"] = web.AppKey("twilio_fake", object)  # type: ignore[arg-type]


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(when: datetime | None = None) -> str:
    return format_datetime(when or datetime.now(timezone.utc), usegmt=False)  # "Thu, 03 Dec 2026 17:00:00 +0000"


def iso8601(when: datetime | None = None) -> str:
    return (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """X-Twilio-Signature as Twilio computes it (providers.md 2.5)."""
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message, "status": status,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status=status)


def not_found(request: web.Request) -> web.Response:
    return error(404, 20404, f"The requested resource {request.path} was not found")


def page_2010(request: web.Request, key: str, items: list[dict[str, Any]], **filters: str) -> dict[str, Any]:
    """2010 list shape: exactly one records key; paging keys are relative URIs (2.1)."""
    size = max(1, min(int(request.query.get("PageSize", 50)), 1000))
    page = int(request.query.get("Page", 0))
    chunk = items[page * size:(page + 1) * size]

    def uri(p: int) -> str:
        return f"{request.path}?" + urlencode({**filters, "PageSize": size, "Page": p})

    more = (page + 1) * size < len(items)
    return {key: chunk, "uri": uri(page), "first_page_uri": uri(0), "page": page, "page_size": size,
            "next_page_uri": uri(page + 1) + "&PageToken=PA" + secrets.token_hex(16) if more else None,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": page * size, "end": page * size + max(len(chunk) - 1, 0)}


def page_v1(request: web.Request, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """v1 list shape: ``meta`` names the records key; paging links are absolute URLs (2.1)."""
    size = max(1, min(int(request.query.get("PageSize", 50)), 1000))
    page = int(request.query.get("Page", 0))
    chunk = items[page * size:(page + 1) * size]
    base = f"{request.scheme}://{request.host}{request.path}"

    def url(p: int) -> str:
        return f"{base}?PageSize={size}&Page={p}"

    more = (page + 1) * size < len(items)
    return {key: chunk, "meta": {"key": key, "page": page, "page_size": size, "url": url(page),
                                 "first_page_url": url(0), "next_page_url": url(page + 1) if more else None,
                                 "previous_page_url": url(page - 1) if page > 0 else None}}


@dataclass
class Delivery:
    """One callback the fake sent, and what the receiver answered."""
    url: str
    params: dict[str, str]
    signature: str
    status: int | None = None
    body: str = ""
    error: str | None = None


class TwilioFake:
    def __init__(self, account_sid: str | None = None, auth_token: str | None = None, *,
                 callback_delay: float = 0.02) -> None:
        self.account_sid = account_sid or sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.callback_delay = callback_delay  # seconds between a message's status steps
        self.numbers: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.bundles: dict[str, dict[str, Any]] = {}  # customer profiles and trust products (BU)
        self.brands: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.service_numbers: dict[str, dict[str, Any]] = {}  # PN -> its record in a service
        self.campaigns: dict[str, dict[str, Any]] = {}
        self.undeliverable: dict[str, int] = {}  # To number -> ErrorCode its messages fail with
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.app = make_app()
        self.app[FAKE] = self
        acct = "/2010-04-01/Accounts/{account}"
        r = self.app.router
        r.add_get(acct + "/AvailablePhoneNumbers/{country}/Local.json", self.guard(self.search))
        r.add_post(acct + "/IncomingPhoneNumbers.json", self.guard(self.buy))
        r.add_get(acct + "/IncomingPhoneNumbers.json", self.guard(self.list_numbers))
        r.add_route("*", acct + "/IncomingPhoneNumbers/{sid}.json", self.guard(self.one_number))
        r.add_post(acct + "/Messages.json", self.guard(self.send))
        r.add_get(acct + "/Messages/{sid}.json", self.guard(self.one_message))
        add_a2p_routes(self)

    # ---- plumbing ----

    def guard(self, handler: Handler) -> Handler:
        """Basic auth as Twilio checks it; then the account in the path must be this one."""
        async def checked(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request.headers.get("Authorization", "")):
                resp = error(401, 20003, "Authenticate")
                resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
                return resp
            account = request.match_info.get("account")
            if account is not None and account != self.account_sid:
                return not_found(request)
            return await handler(request)
        return checked

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.account_sid) & hmac.compare_digest(password, self.auth_token)

    def number_uri(self, pn: str) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/IncomingPhoneNumbers/{pn}.json"

    async def post_callback(self, url: str, params: dict[str, str]) -> Delivery:
        """POST a signed form to ``url``, as Twilio does, and record the reply."""
        pairs = sorted(params.items())
        delivery = Delivery(url, dict(pairs), signature(self.auth_token, url, pairs))
        self.deliveries.append(delivery)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        try:
            async with self._session.post(url, data=pairs, headers={
                    "X-Twilio-Signature": delivery.signature, "User-Agent": "TwilioProxy/1.1"}) as resp:
                delivery.status, delivery.body = resp.status, await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            delivery.error = type(exc).__name__
        return delivery

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until every scheduled callback has been sent."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def set_status(self, sid_: str, status: str) -> None:
        """Play Twilio's reviewers: BU -> bundle ``status``; BN -> brand ``status``; QE -> campaign."""
        if sid_ in self.bundles:
            self.bundles[sid_].update(status=status, date_updated=iso8601())
        elif sid_ in self.brands:
            brand = self.brands[sid_]
            brand.update(status=status, date_updated=iso8601(),
                         failure_reason="fake: rejected for the test" if status == "FAILED" else None)
            if status == "APPROVED" and not brand["tcr_id"]:
                brand.update(tcr_id="B" + secrets.token_hex(3).upper(), brand_score=80, identity_status="VERIFIED")
        elif sid_ in self.campaigns:
            campaign = self.campaigns[sid_]
            campaign.update(campaign_status=status, date_updated=iso8601())
            if status == "VERIFIED" and not campaign["campaign_id"]:
                campaign["campaign_id"] = "C" + secrets.token_hex(3).upper()
        else:
            raise KeyError(sid_)

    # ---- numbers ----

    async def search(self, request: web.Request) -> web.Response:
        area = request.query.get("AreaCode", "415")
        if not re.fullmatch(r"[2-9]\d\d", area):
            return error(400, 21452, "AreaCode is not a valid area code")
        locality, region, postal = AREAS.get(area, (None, None, None))
        owned = {n["phone_number"] for n in self.numbers.values()}
        size = int(request.query.get("PageSize", 50))
        found = []
        for line in range(100, 200):  # 555-0100..0199: the NANP range kept for fiction
            number = f"+1{area}5550{line}"
            if number not in owned and len(found) < size:
                found.append({
                    "friendly_name": f"({area}) 555-0{line}", "phone_number": number, "lata": None,
                    "locality": locality, "rate_center": locality.upper() if locality else None,
                    "latitude": None, "longitude": None, "region": region, "postal_code": postal,
                    "iso_country": request.match_info["country"], "address_requirements": "none", "beta": False,
                    "capabilities": {"voice": True, "SMS": True, "MMS": True, "fax": False}})
        return web.json_response({"available_phone_numbers": found, "uri": request.path_qs,
                                  "end": max(len(found) - 1, 0), "first_page_uri": request.path_qs,
                                  "next_page_uri": None, "previous_page_uri": None, "page": 0,
                                  "page_size": size, "start": 0})

    def _apply_number_params(self, record: dict[str, Any], form: Any) -> None:
        for param, field in (("FriendlyName", "friendly_name"), ("VoiceUrl", "voice_url"), ("VoiceMethod", "voice_method"),
                             ("SmsUrl", "sms_url"), ("SmsMethod", "sms_method"), ("StatusCallback", "status_callback"),
                             ("StatusCallbackMethod", "status_callback_method"),
                             ("VoiceApplicationSid", "voice_application_sid"),
                             ("SmsApplicationSid", "sms_application_sid"), ("TrunkSid", "trunk_sid")):
            if param in form:
                record[field] = form[param]
        record["date_updated"] = rfc2822()

    async def buy(self, request: web.Request) -> web.Response:
        form = await request.post()
        owned = {n["phone_number"] for n in self.numbers.values()}
        number = form.get("PhoneNumber")
        if not number and form.get("AreaCode"):
            number = next((n for n in (f"+1{form['AreaCode']}5550{i}" for i in range(100, 200)) if n not in owned), None)
        if not number:
            return error(400, 21452, "No phone numbers found in the requested area code" if form.get("AreaCode")
                         else "A PhoneNumber or an AreaCode is required")
        if not E164_US.match(str(number)) or number in owned:
            return error(400, 21422, f"The phone number {number} is not available")
        pn, now = sid("PN"), rfc2822()
        record: dict[str, Any] = {
            "sid": pn, "account_sid": self.account_sid, "phone_number": number, "friendly_name": str(number),
            "voice_url": None, "voice_method": "POST", "voice_fallback_url": None, "sms_url": "", "sms_method": "POST",
            "sms_fallback_url": "", "status_callback": "", "status_callback_method": "POST",
            "voice_application_sid": None, "sms_application_sid": None, "trunk_sid": None, "address_sid": None,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False}, "status": "in-use",
            "origin": "twilio", "beta": False, "address_requirements": "none", "api_version": "2010-04-01",
            "date_created": now, "date_updated": now, "uri": self.number_uri(pn)}
        self._apply_number_params(record, form)
        self.numbers[pn] = record
        return web.json_response(record, status=201)

    async def list_numbers(self, request: web.Request) -> web.Response:
        wanted = request.query.get("PhoneNumber")
        items = [n for n in self.numbers.values() if not wanted or n["phone_number"] == wanted]
        filters = {"PhoneNumber": wanted} if wanted else {}
        return web.json_response(page_2010(request, "incoming_phone_numbers", items, **filters))

    async def one_number(self, request: web.Request) -> web.Response:
        record = self.numbers.get(request.match_info["sid"])
        if record is None:
            return not_found(request)
        if request.method == "DELETE":
            del self.numbers[record["sid"]]
            self.service_numbers.pop(record["sid"], None)
            return web.Response(status=204)
        if request.method == "POST":
            self._apply_number_params(record, await request.post())
        elif request.method != "GET":
            return error(405, 20004, "Method not allowed")
        return web.json_response(record)

    # ---- messages ----

    async def send(self, request: web.Request) -> web.Response:
        form = await request.post()
        to, from_, service_sid = form.get("To"), form.get("From"), form.get("MessagingServiceSid")
        body, media = form.get("Body", ""), form.getall("MediaUrl", [])
        if not to:
            return error(400, 21604, "A 'To' phone number is required")
        if not re.fullmatch(r"\+[1-9]\d{7,14}", str(to)):
            return error(400, 21211, f"The 'To' number {to} is not a valid phone number")
        if not body and not media:
            return error(400, 21602, "A message body or media URL is required")
        if not from_ and not service_sid:
            return error(400, 21603, "A 'From' phone number or a MessagingServiceSid is required")
        service = self.services.get(str(service_sid)) if service_sid else None
        if service_sid and service is None:
            return error(400, 21701, f"The Messaging Service {service_sid} does not exist")
        owned = {n["phone_number"] for n in self.numbers.values()}
        status = "queued"
        if from_ is None and service is not None:
            pool = [self.numbers[pn]["phone_number"] for pn, s in self.service_numbers.items()
                    if s["service_sid"] == service["sid"]]
            if not pool:
                return error(400, 21704, "The Messaging Service contains no phone numbers")
            from_, status = pool[0], "accepted"  # Twilio picks the sender from the pool (2.4)
        elif from_ not in owned:
            return error(400, 21606, f"The From phone number {from_} is not a valid, SMS-capable number of this account")
        sm, now = sid("MM" if media else "SM"), rfc2822()
        record = {
            "sid": sm, "account_sid": self.account_sid, "api_version": "2010-04-01", "to": to, "from": from_,
            "body": body, "status": status, "direction": "outbound-api", "num_segments": str(max(1, -(-len(body) // 160))),
            "num_media": str(len(media)), "messaging_service_sid": service["sid"] if service else None,
            "error_code": None, "error_message": None, "price": None, "price_unit": "USD",
            "date_created": now, "date_updated": now, "date_sent": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sm}.json",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sm}/Media.json"}}
        self.messages[sm] = record
        callback = form.get("StatusCallback") or (service or {}).get("status_callback")
        self.spawn(self._deliver(record, str(callback) if callback else None))
        return web.json_response(record, status=201)

    async def _deliver(self, record: dict[str, Any], callback: str | None) -> None:
        """Move a sent message along queued -> sent -> delivered|undelivered, calling back at each step."""
        failure = self.undeliverable.get(record["to"])
        for step in ("queued", "sent", "undelivered" if failure else "delivered"):
            await asyncio.sleep(self.callback_delay)
            record.update(status=step, date_updated=rfc2822())
            if step == "sent":
                record["date_sent"] = record["date_updated"]
            if step == "undelivered":
                record.update(error_code=failure, error_message="fake: the carrier could not deliver it")
            if callback:
                params = {"AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "From": record["from"],
                          "To": record["to"], "MessageSid": record["sid"], "SmsSid": record["sid"],
                          "MessageStatus": step, "SmsStatus": step}
                if record["messaging_service_sid"]:
                    params["MessagingServiceSid"] = record["messaging_service_sid"]
                if step == "undelivered":
                    params["ErrorCode"] = str(failure)
                await self.post_callback(callback, params)

    async def one_message(self, request: web.Request) -> web.Response:
        record = self.messages.get(request.match_info["sid"])
        return web.json_response(record) if record else not_found(request)

    async def send_inbound_sms(self, from_: str, to: str, body: str, *, url: str | None = None) -> Delivery:
        """Someone texts ``to`` (one of our numbers): Twilio posts it to the number's SmsUrl, or to
        its Messaging Service's inbound URL, or to ``url`` when given."""
        number = next((n for n in self.numbers.values() if n["phone_number"] == to), None)
        in_service = self.service_numbers.get(number["sid"]) if number else None
        service = self.services.get(in_service["service_sid"]) if in_service else None
        target = url or (number or {}).get("sms_url") or (service or {}).get("inbound_request_url")
        if not target:
            raise ValueError(f"{to} has no SmsUrl; pass url=")
        sm, now = sid("SM"), rfc2822()
        self.messages[sm] = {
            "sid": sm, "account_sid": self.account_sid, "api_version": "2010-04-01", "to": to, "from": from_,
            "body": body, "status": "received", "direction": "inbound", "num_segments": "1", "num_media": "0",
            "messaging_service_sid": service["sid"] if service else None, "error_code": None, "error_message": None,
            "price": None, "price_unit": "USD", "date_created": now, "date_updated": now, "date_sent": now,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sm}.json"}
        params = {"MessageSid": sm, "SmsSid": sm, "SmsMessageSid": sm, "AccountSid": self.account_sid,
                  "From": from_, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
                  "SmsStatus": "received", "ApiVersion": "2010-04-01", "FromCountry": "US", "ToCountry": "US"}
        if service:
            params["MessagingServiceSid"] = service["sid"]
        return await self.post_callback(target, params)
