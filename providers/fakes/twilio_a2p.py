"""The A2P 10DLC half of the Twilio fake (providers.md 2.9): TrustHub customer profiles and trust
products, and Messaging v1 brand registrations, services, their numbers and US A2P campaigns.

Split from providers/fakes/twilio.py only to keep each module short; ``add_a2p_routes`` adds
these routes to a ``TwilioFake`` and keeps their state on it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from providers.fakes.twilio import TwilioFake

USECASES = {"2FA", "ACCOUNT_NOTIFICATION", "CUSTOMER_CARE", "DELIVERY_NOTIFICATION", "FRAUD_ALERT",
            "HIGHER_EDUCATION", "LOW_VOLUME", "MARKETING", "MIXED", "POLLING_VOTING", "PUBLIC_SERVICE_ANNOUNCEMENT",
            "SECURITY_ALERT", "SOLE_PROPRIETOR"}


def _flag(value: Any) -> bool:
    return str(value).lower() == "true"  # the SDK serialises booleans as "true"/"false"


def add_a2p_routes(fake: "TwilioFake") -> None:
    from providers.fakes.twilio import error, iso8601, not_found, page_v1, sid

    def missing(form: Any, *names: str) -> web.Response | None:
        for name in names:
            if not form.get(name):
                return error(400, 20001, f"Missing required parameter {name} in the post body")
        return None

    def bundle_routes(kind: str) -> None:
        async def create(request: web.Request) -> web.Response:
            form = await request.post()
            if (bad := missing(form, "FriendlyName", "Email", "PolicySid")) is not None:
                return bad
            bu, now = sid("BU"), iso8601()
            fake.bundles[bu] = {
                "sid": bu, "account_sid": fake.account_sid, "policy_sid": form["PolicySid"],
                "friendly_name": form["FriendlyName"], "status": "draft", "email": form["Email"],
                "status_callback": form.get("StatusCallback"), "valid_until": None, "errors": None,
                "date_created": now, "date_updated": now, "kind": kind,
                "url": f"{request.scheme}://{request.host}/v1/{kind}/{bu}",
                "links": {"entity_assignments": f"{request.scheme}://{request.host}/v1/{kind}/{bu}/EntityAssignments",
                          "evaluations": f"{request.scheme}://{request.host}/v1/{kind}/{bu}/Evaluations"}}
            return web.json_response(_public(fake.bundles[bu]), status=201)

        async def fetch(request: web.Request) -> web.Response:
            record = fake.bundles.get(request.match_info["sid"])
            if record is None or record["kind"] != kind:
                return not_found(request)
            return web.json_response(_public(record))

        fake.app.router.add_post(f"/v1/{kind}", fake.guard(create))
        fake.app.router.add_get(f"/v1/{kind}/{{sid}}", fake.guard(fetch))

    bundle_routes("CustomerProfiles")
    bundle_routes("TrustProducts")

    async def create_brand(request: web.Request) -> web.Response:
        form = await request.post()
        if (bad := missing(form, "CustomerProfileBundleSid", "A2PProfileBundleSid")) is not None:
            return bad
        for name in ("CustomerProfileBundleSid", "A2PProfileBundleSid"):
            if form[name] not in fake.bundles:
                return error(400, 21713 if name.startswith("Customer") else 21714, f"{name} {form[name]} was not found")
        bn, now = sid("BN"), iso8601()
        fake.brands[bn] = {
            "sid": bn, "account_sid": fake.account_sid, "customer_profile_bundle_sid": form["CustomerProfileBundleSid"],
            "a2p_profile_bundle_sid": form["A2PProfileBundleSid"], "brand_type": form.get("BrandType", "STANDARD"),
            "status": "PENDING", "tcr_id": None, "failure_reason": None, "errors": [], "brand_score": None,
            "brand_feedback": None, "identity_status": None, "russell_3000": False, "government_entity": False,
            "tax_exempt_status": None, "skip_automatic_sec_vet": _flag(form.get("SkipAutomaticSecVet")),
            "mock": _flag(form.get("Mock")), "date_created": now, "date_updated": now,
            "url": f"{request.scheme}://{request.host}/v1/a2p/BrandRegistrations/{bn}",
            "links": {"brand_vettings": f"{request.scheme}://{request.host}/v1/a2p/BrandRegistrations/{bn}/Vettings"}}
        return web.json_response(fake.brands[bn], status=201)

    async def fetch_brand(request: web.Request) -> web.Response:
        record = fake.brands.get(request.match_info["sid"])
        return web.json_response(record) if record else not_found(request)

    async def list_brands(request: web.Request) -> web.Response:
        return web.json_response(page_v1(request, "data", list(fake.brands.values())))

    async def create_service(request: web.Request) -> web.Response:
        form = await request.post()
        if (bad := missing(form, "FriendlyName")) is not None:
            return bad
        mg, now = sid("MG"), iso8601()
        base = f"{request.scheme}://{request.host}/v1/Services/{mg}"
        fake.services[mg] = {
            "sid": mg, "account_sid": fake.account_sid, "friendly_name": form["FriendlyName"],
            "inbound_request_url": form.get("InboundRequestUrl"), "inbound_method": form.get("InboundMethod", "POST"),
            "fallback_url": form.get("FallbackUrl"), "fallback_method": form.get("FallbackMethod", "POST"),
            "status_callback": form.get("StatusCallback"), "sticky_sender": form.get("StickySender", "true") != "false",
            "use_inbound_webhook_on_number": _flag(form.get("UseInboundWebhookOnNumber")),
            "usecase": form.get("Usecase", "undeclared"), "us_app_to_person_registered": False,
            "date_created": now, "date_updated": now, "url": base,
            "links": {"phone_numbers": base + "/PhoneNumbers", "us_app_to_person": base + "/Compliance/Usa2p"}}
        return web.json_response(fake.services[mg], status=201)

    async def fetch_service(request: web.Request) -> web.Response:
        record = fake.services.get(request.match_info["service"])
        return web.json_response(record) if record else not_found(request)

    async def add_number(request: web.Request) -> web.Response:
        service = fake.services.get(request.match_info["service"])
        if service is None:
            return not_found(request)
        form = await request.post()
        number = fake.numbers.get(str(form.get("PhoneNumberSid")))
        if number is None:
            return error(400, 21710, f"Phone number {form.get('PhoneNumberSid')} was not found on this account")
        if number["sid"] in fake.service_numbers:
            return error(409, 21710, "The phone number is already in a Messaging Service")
        now = iso8601()
        fake.service_numbers[number["sid"]] = record = {
            "sid": number["sid"], "account_sid": fake.account_sid, "service_sid": service["sid"],
            "phone_number": number["phone_number"], "country_code": "US", "capabilities": ["SMS", "MMS", "Voice"],
            "date_created": now, "date_updated": now, "url": f"{service['url']}/PhoneNumbers/{number['sid']}"}
        return web.json_response(record, status=201)

    async def create_campaign(request: web.Request) -> web.Response:
        service = fake.services.get(request.match_info["service"])
        if service is None:
            return not_found(request)
        form = await request.post()
        required = ("BrandRegistrationSid", "Description", "MessageFlow", "UsAppToPersonUsecase",
                    "HasEmbeddedLinks", "HasEmbeddedPhone")
        if (bad := missing(form, *required)) is not None:
            return bad
        samples = form.getall("MessageSamples", [])
        if not 2 <= len(samples) <= 5:
            return error(400, 21718, "MessageSamples needs between 2 and 5 samples")
        if form["BrandRegistrationSid"] not in fake.brands:
            return error(400, 21712, f"Brand registration {form['BrandRegistrationSid']} was not found")
        if form["UsAppToPersonUsecase"] not in USECASES:
            return error(400, 21711, f"Unknown use case {form['UsAppToPersonUsecase']}")
        qe, now = sid("QE"), iso8601()
        optional = {name: form.get(param) for name, param in (
            ("opt_in_message", "OptInMessage"), ("opt_out_message", "OptOutMessage"), ("help_message", "HelpMessage"),
            ("privacy_policy_url", "PrivacyPolicyUrl"), ("terms_and_conditions_url", "TermsAndConditionsUrl"))}
        fake.campaigns[qe] = {
            "sid": qe, "account_sid": fake.account_sid, "brand_registration_sid": form["BrandRegistrationSid"],
            "messaging_service_sid": service["sid"], "description": form["Description"],
            "message_flow": form["MessageFlow"], "message_samples": list(samples),
            "us_app_to_person_usecase": form["UsAppToPersonUsecase"],
            "has_embedded_links": _flag(form["HasEmbeddedLinks"]), "has_embedded_phone": _flag(form["HasEmbeddedPhone"]),
            "subscriber_opt_in": _flag(form.get("SubscriberOptIn")), "age_gated": _flag(form.get("AgeGated")),
            "direct_lending": _flag(form.get("DirectLending")), "campaign_status": "IN_PROGRESS", "campaign_id": None,
            "is_externally_registered": False, "rate_limits": {}, "errors": [], "mock": False,
            "opt_in_keywords": form.getall("OptInKeywords", None), "opt_out_keywords": form.getall("OptOutKeywords", None),
            "help_keywords": form.getall("HelpKeywords", None), **optional,
            "date_created": now, "date_updated": now, "url": f"{service['url']}/Compliance/Usa2p/{qe}"}
        service["us_app_to_person_registered"] = True
        return web.json_response(fake.campaigns[qe], status=201)

    async def fetch_campaign(request: web.Request) -> web.Response:
        record = fake.campaigns.get(request.match_info["sid"])
        if record is None or record["messaging_service_sid"] != request.match_info["service"]:
            return not_found(request)
        return web.json_response(record)

    r = fake.app.router
    r.add_post("/v1/a2p/BrandRegistrations", fake.guard(create_brand))
    r.add_get("/v1/a2p/BrandRegistrations", fake.guard(list_brands))
    r.add_get("/v1/a2p/BrandRegistrations/{sid}", fake.guard(fetch_brand))
    r.add_post("/v1/Services", fake.guard(create_service))
    r.add_get("/v1/Services/{service}", fake.guard(fetch_service))
    r.add_post("/v1/Services/{service}/PhoneNumbers", fake.guard(add_number))
    r.add_post("/v1/Services/{service}/Compliance/Usa2p", fake.guard(create_campaign))
    r.add_get("/v1/Services/{service}/Compliance/Usa2p/{sid}", fake.guard(fetch_campaign))


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A bundle as Twilio shows it: without the fake's own bookkeeping."""
    return {k: v for k, v in record.items() if k != "kind"}
