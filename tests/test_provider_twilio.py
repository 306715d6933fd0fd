"""Twilio: the real adapter (official SDK, asyncio client) against the local fake, the fake's wire
shapes and signed callbacks, and the parsers against the example payloads in tests/data/twilio
(written from providers.md section 2; see the README there)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp import web
from twilio.http.response import Response as SdkResponse
from twilio.rest import Client
from twilio.rest.api.v2010.account.available_phone_number_country.local import LocalPage
from twilio.rest.api.v2010.account.incoming_phone_number import IncomingPhoneNumberInstance
from twilio.rest.api.v2010.account.message import MessageInstance
from twilio.rest.messaging.v1.brand_registration import BrandRegistrationPage
from twilio.rest.messaging.v1.service import ServiceInstance
from twilio.rest.messaging.v1.service.us_app_to_person import UsAppToPersonInstance
from twilio.rest.trusthub.v1.customer_profiles import CustomerProfilesInstance
from twilio.rest.trusthub.v1.trust_products import TrustProductsInstance

from providers import twilio_api as tw
from providers.errors import ProviderError
from providers.fakes.server import FakeServer, make_app
from providers.fakes.twilio import TwilioFake, signature
from providers.twilio_api import TwilioApi, public_url, validate_request

DATA = Path(__file__).parent / "data" / "twilio"
SID = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")
CUSTOMER = "+14155550999"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
async def fake():
    twilio = TwilioFake(callback_delay=0.01)
    server = await FakeServer(twilio.app).start()
    server.faults.timeout_seconds = 1.0
    twilio.server = server  # type: ignore[attr-defined]
    yield twilio
    await twilio.close()
    await server.stop()


@pytest.fixture
async def api(fake):
    client = TwilioApi(fake.account_sid, fake.auth_token, base_url=fake.server.url, timeout=0.5, backoff=0.01)
    yield client
    await client.close()


@pytest.fixture
async def receiver():
    """Stands in for the gateway: keeps each webhook's path, headers and form, answers empty TwiML."""
    app = make_app()
    seen: list = []

    async def hook(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.headers.get("X-Twilio-Signature"), await request.post()))
        return web.Response(text="<Response/>", content_type="text/xml")

    app.router.add_post("/{tail:.*}", hook)
    server = await FakeServer(app).start()
    server.seen = seen  # type: ignore[attr-defined]
    yield server
    await server.stop()


async def buy(api: TwilioApi, **kw) -> tw.IncomingNumber:
    found = await api.search_local_numbers(415, limit=1)
    return await api.buy_number(found[0].phone_number, **kw)


# ---- operations --------------------------------------------------------------------------------------

async def test_search_buy_update_list_release(api, fake):
    found = await api.search_local_numbers("212", limit=3, sms_enabled=True)
    assert len(found) == 3 and found[0].phone_number.startswith("+1212") and found[0].region == "NY"
    assert found[0].sms and found[0].voice
    number = await api.buy_number(found[0].phone_number, voice_url="https://v.example/voice",
                                  sms_url="https://app.example/sms", status_callback="https://app.example/status",
                                  friendly_name="front desk")
    assert SID.match(number.sid) and number.sid.startswith("PN")
    assert (number.voice_url, number.sms_url, number.status_callback) == (
        "https://v.example/voice", "https://app.example/sms", "https://app.example/status")
    stored = fake.numbers[number.sid]
    assert stored["voice_method"] == "POST" and stored["friendly_name"] == "front desk"
    assert found[0].phone_number not in [n.phone_number for n in await api.search_local_numbers(212, limit=3)]
    updated = await api.update_number(number.sid, sms_url="https://app.example/sms2")
    assert updated.sms_url == "https://app.example/sms2" and updated.voice_url == "https://v.example/voice"
    assert (await api.fetch_number(number.sid)).sms_url == "https://app.example/sms2"
    for extra in (await api.search_local_numbers(212, limit=4))[:4]:
        await api.buy_number(extra.phone_number)
    listed = await api.list_numbers(page_size=2)  # 5 numbers over 3 pages of the 2010 shape
    assert len(listed) == 5 and len({n.sid for n in listed}) == 5
    assert [n.sid for n in await api.list_numbers(phone_number=number.phone_number)] == [number.sid]
    await api.release_number(number.sid)
    assert number.sid not in fake.numbers
    with pytest.raises(ProviderError) as exc:
        await api.fetch_number(number.sid)
    assert (exc.value.status, exc.value.code, exc.value.retryable) == (404, "20404", False)


async def test_twilio_errors_are_provider_errors(api):
    number = await buy(api)
    with pytest.raises(ProviderError) as exc:
        await api.buy_number(number.phone_number)  # already ours: not available
    assert (exc.value.provider, exc.value.status, exc.value.code) == ("twilio", 400, "21422")
    assert "not available" in exc.value.message and "Unable to" not in exc.value.message
    with pytest.raises(ProviderError) as exc:
        await api.send_sms("12", "hi", from_=number.phone_number)
    assert exc.value.code == "21211" and not exc.value.retryable
    with pytest.raises(ProviderError) as exc:
        await api.send_sms(CUSTOMER, "hi", from_="+12125550100")  # not a number of this account
    assert exc.value.code == "21606"
    with pytest.raises(ValueError):
        await api.send_sms(CUSTOMER, "hi")


async def test_send_sms_status_callbacks_arrive_signed(api, fake, receiver):
    number = await buy(api)
    callback = f"{receiver.url}/api/webhooks/twilio/sms-status?org=42"
    sent = await api.send_sms(CUSTOMER, "See you Tuesday", from_=number.phone_number, status_callback=callback)
    assert SID.match(sent.sid) and sent.sid.startswith("SM") and sent.status == "queued"
    assert (sent.to, sent.from_, sent.direction, sent.num_segments) == (CUSTOMER, number.phone_number, "outbound-api", 1)
    await fake.settle()
    statuses = [form["MessageStatus"] for _, _, form in receiver.seen]
    assert statuses == ["queued", "sent", "delivered"]
    for raw_path, sig, form in receiver.seen:
        assert raw_path == "/api/webhooks/twilio/sms-status?org=42" and form["MessageSid"] == sent.sid
        # the gateway rebuilds the URL from its configured public base, here the receiver's own origin
        assert validate_request(fake.auth_token, public_url(receiver.url, raw_path), form, sig)
        assert not validate_request("wrong-token", public_url(receiver.url, raw_path), form, sig)
    assert all(d.status == 200 for d in fake.deliveries)
    assert (await api.fetch_message(sent.sid)).status == "delivered"


async def test_undelivered_message_reports_error_code(api, fake, receiver):
    number = await buy(api)
    fake.undeliverable[CUSTOMER] = 30003
    sent = await api.send_sms(CUSTOMER, "hello", from_=number.phone_number, status_callback=receiver.url + "/s")
    await fake.settle()
    last = receiver.seen[-1][2]
    assert (last["MessageStatus"], last["ErrorCode"]) == ("undelivered", "30003")
    fetched = await api.fetch_message(sent.sid)
    assert (fetched.status, fetched.error_code) == ("undelivered", 30003)


async def test_a2p_objects_and_send_through_messaging_service(api, fake, receiver):
    profile = await api.create_customer_profile("Ada Dental LLC", "owner@ada.example", "RN" + "a" * 32)
    product = await api.create_trust_product("Ada messaging", "owner@ada.example", "RN" + "b" * 32)
    assert profile.sid.startswith("BU") and SID.match(product.sid) and profile.status == "draft"
    fake.set_status(profile.sid, "twilio-approved")
    assert (await api.fetch_customer_profile(profile.sid)).status == "twilio-approved"
    assert (await api.fetch_trust_product(product.sid)).status == "draft"
    brand = await api.create_brand_registration(profile.sid, product.sid)
    assert brand.sid.startswith("BN") and brand.status == "PENDING" and brand.tcr_id is None
    fake.set_status(brand.sid, "APPROVED")
    approved = await api.fetch_brand_registration(brand.sid)
    assert approved.status == "APPROVED" and approved.tcr_id and approved.brand_score == 80
    await api.create_brand_registration(profile.sid, product.sid, brand_type="SOLE_PROPRIETOR")
    await api.create_brand_registration(profile.sid, product.sid, mock=True)
    assert len(await api.list_brand_registrations(page_size=2)) == 3  # two pages of the v1 meta shape
    service = await api.create_messaging_service("Ada SMS", inbound_request_url=receiver.url + "/in",
                                                 status_callback=receiver.url + "/svc-status")
    assert service.sid.startswith("MG") and (await api.fetch_messaging_service(service.sid)).friendly_name == "Ada SMS"
    campaign = await api.create_us_a2p_campaign(
        service.sid, brand.sid, description="Booking confirmations", message_flow="Opt in when booking",
        message_samples=["Booked for 10:00", "Reply STOP to stop"], usecase="CUSTOMER_CARE", has_embedded_phone=True,
        opt_in_message="You will get booking texts")
    assert campaign.sid.startswith("QE") and campaign.campaign_status == "IN_PROGRESS"
    assert fake.campaigns[campaign.sid]["message_samples"] == ["Booked for 10:00", "Reply STOP to stop"]
    assert fake.campaigns[campaign.sid]["has_embedded_phone"] is True
    fake.set_status(campaign.sid, "VERIFIED")
    verified = await api.fetch_us_a2p_campaign(service.sid, campaign.sid)
    assert verified.campaign_status == "VERIFIED" and verified.campaign_id
    with pytest.raises(ProviderError) as exc:
        await api.create_us_a2p_campaign(service.sid, brand.sid, description="d", message_flow="f",
                                         message_samples=["only one"])
    assert exc.value.status == 400
    number = await buy(api)
    with pytest.raises(ProviderError):  # a service with no numbers cannot send
        await api.send_sms(CUSTOMER, "hi", messaging_service_sid=service.sid)
    await api.add_number_to_service(service.sid, number.sid)
    sent = await api.send_sms(CUSTOMER, "hi", messaging_service_sid=service.sid)
    assert (sent.status, sent.from_, sent.messaging_service_sid) == ("accepted", number.phone_number, service.sid)
    await fake.settle()
    assert [p for p, _, _ in receiver.seen] == ["/svc-status"] * 3  # the service's callback, when none given


async def test_inbound_sms_webhook_is_signed_for_the_public_url(api, fake, receiver):
    number = await buy(api, sms_url=f"{receiver.url}/api/webhooks/twilio/sms?org=7&x=a%20b")
    delivery = await fake.send_inbound_sms(CUSTOMER, number.phone_number, "Can I move my appointment?")
    assert delivery.status == 200 and delivery.body == "<Response/>"
    raw_path, sig, form = receiver.seen[-1]
    assert raw_path == "/api/webhooks/twilio/sms?org=7&x=a%20b"  # the query exactly as sent
    assert (form["Body"], form["From"], form["To"], form["SmsStatus"]) == (
        "Can I move my appointment?", CUSTOMER, number.phone_number, "received")
    assert form["MessageSid"].startswith("SM") and form["AccountSid"] == fake.account_sid
    url = public_url(receiver.url + "/", raw_path)
    assert validate_request(fake.auth_token, url, form, sig)
    tampered = form.copy()
    tampered["Body"] = "Cancel everything"
    assert not validate_request(fake.auth_token, url, tampered, sig)
    assert not validate_request(fake.auth_token, public_url("https://app.example.com", raw_path), form, sig)
    assert not validate_request(fake.auth_token, url, form, None)
    assert not validate_request("", url, form, sig)
    other = await fake.send_inbound_sms(CUSTOMER, number.phone_number, "hi", url=receiver.url + "/elsewhere")
    assert other.url.endswith("/elsewhere") and receiver.seen[-1][0] == "/elsewhere"


def test_signature_matches_known_vector_and_proxy_rule():
    # providers.md 2.5: Twilio's classic example, computed independently by the fake
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
              ("From", "+12349013030"), ("To", "+18005551212")]
    assert signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    example = load("status_callback.json")
    assert validate_request(example["auth_token"], example["url"], example["params"], example["signature"])
    # behind a proxy the process sees http://127.0.0.1:8080; only the configured public URL verifies
    path = example["url"].removeprefix("https://app.example.com")
    assert validate_request(example["auth_token"], public_url("https://app.example.com", path), example["params"],
                            example["signature"])
    assert not validate_request(example["auth_token"], "http://127.0.0.1:8080" + path, example["params"],
                                example["signature"])


# ---- faults ------------------------------------------------------------------------------------------

async def test_bad_credentials(fake):
    api = TwilioApi(fake.account_sid, "not-the-token", base_url=fake.server.url, backoff=0.01)
    with pytest.raises(ProviderError) as exc:
        await api.search_local_numbers(415)
    await api.close()
    err = exc.value
    assert (err.provider, err.status, err.code, err.retryable) == ("twilio", 401, "20003", False)
    assert "credentials" in err.message and "Authenticate" in err.message and "not-the-token" not in str(err)


async def test_5xx_and_429_retried_for_reads_only(api, fake):
    fake.server.faults.fail_next("5xx", times=2)
    assert len(await api.search_local_numbers(415, limit=2)) == 2
    fake.server.faults.fail_next("429")
    assert await api.list_numbers() == []
    number = await buy(api)
    fake.server.faults.fail_next("5xx")
    with pytest.raises(ProviderError) as exc:  # a send is never repeated blindly
        await api.send_sms(CUSTOMER, "once", from_=number.phone_number)
    assert (exc.value.status, exc.value.retryable) == (503, True) and fake.messages == {}
    fake.server.faults.fail_next("429")
    with pytest.raises(ProviderError) as exc:
        await api.buy_number("+14155550150")
    assert (exc.value.status, exc.value.retryable) == (429, True) and len(fake.numbers) == 1
    fake.server.faults.fail_next("429", times=3)
    with pytest.raises(ProviderError) as exc:  # retries run out
        await api.fetch_number(number.sid)
    assert exc.value.status == 429 and exc.value.retryable


async def test_timeouts(api, fake):
    fake.server.faults.fail_next("timeout")
    assert (await api.fetch_number((await buy(api)).sid)).phone_number  # a read: retried after the timeout
    fake.server.faults.fail_next("timeout", times=3)
    with pytest.raises(ProviderError) as exc:
        await api.search_local_numbers(415)
    assert exc.value.retryable and exc.value.message == "timed out"
    fake.server.faults.clear()
    fake.server.faults.fail_next("timeout")
    with pytest.raises(ProviderError) as exc:
        await api.create_messaging_service("slow")
    assert exc.value.message == "timed out"


async def test_malformed_replies(api, fake):
    fake.server.faults.fail_next("malformed")
    with pytest.raises(ProviderError) as exc:
        await api.search_local_numbers(415)
    assert "not JSON" in exc.value.message and exc.value.provider == "twilio"
    fake.server.faults.fail_next("malformed")
    with pytest.raises(ProviderError) as exc:
        await api.create_customer_profile("x", "x@example.com", "RN" + "0" * 32)
    assert "not JSON" in exc.value.message


async def test_unreachable_host():
    api = TwilioApi("AC" + "0" * 32, "token", base_url="http://127.0.0.1:9", attempts=1)
    with pytest.raises(ProviderError) as exc:
        await api.fetch_message("SM" + "0" * 32)
    await api.close()
    assert exc.value.retryable and "could not connect" in exc.value.message


# ---- the fake's wire shapes ----------------------------------------------------------------------------

async def test_fake_wire_shapes(api, fake):
    import aiohttp
    await buy(api)
    base = f"{fake.server.url}/2010-04-01/Accounts/{fake.account_sid}"
    auth = aiohttp.BasicAuth(fake.account_sid, fake.auth_token)
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/IncomingPhoneNumbers.json", auth=auth) as resp:
            page = await resp.json()
        assert set(page) - tw_meta_keys() == {"incoming_phone_numbers"}  # exactly one records key
        assert page["incoming_phone_numbers"][0]["date_created"].endswith("+0000")
        async with http.get(f"{fake.server.url}/v1/a2p/BrandRegistrations", auth=auth) as resp:
            v1 = await resp.json()
        assert v1["meta"]["key"] == "data" and v1["data"] == []
        async with http.post(base + "/Messages.json", data={"To": CUSTOMER, "Body": "x"}) as resp:
            assert resp.status == 401 and "Basic" in resp.headers["WWW-Authenticate"]
            assert await resp.json() == {"code": 20003, "message": "Authenticate", "status": 401,
                                         "more_info": "https://www.twilio.com/docs/errors/20003"}
        async with http.post(base + "/Messages.json", data={"Body": "x"}, auth=auth) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 21604
        async with http.get(f"{fake.server.url}/2010-04-01/Accounts/AC{'f' * 32}/Messages/SM{'0' * 32}.json",
                            auth=auth) as resp:
            assert resp.status == 404


def tw_meta_keys() -> set[str]:
    from twilio.base.page import Page
    return set(Page.META_KEYS)


# ---- parsers against the example payloads ---------------------------------------------------------------

def test_parsers_on_example_payloads():
    client = Client("AC0123456789abcdef0123456789abcdef", "unused")  # builds SDK objects; no request is made
    v2010, messaging, trusthub = client.api.v2010, client.messaging.v1, client.trusthub.v1
    acct = client.username

    page = LocalPage(v2010, SdkResponse(200, (DATA / "available_numbers_page.json").read_text()),
                     {"account_sid": acct, "country_code": "US"})
    numbers = [tw.parse_available_number(i) for i in page]
    assert [n.phone_number for n in numbers] == ["+14155550142", "+14155550177"]
    assert (numbers[0].sms, numbers[0].mms, numbers[1].sms, numbers[1].locality) == (True, True, False, "Daly City")

    number = tw.parse_incoming_number(IncomingPhoneNumberInstance(v2010, load("incoming_number.json"), acct))
    assert number.sid == "PN0a1b2c3d4e5f60718293a4b5c6d7e8f9" and number.sms_url.endswith("/sms")
    assert number.status_callback.endswith("/status") and number.status == "in-use"

    message = tw.parse_message(MessageInstance(v2010, load("message.json"), acct))
    assert (message.status, message.error_code, message.num_segments, message.from_) == (
        "undelivered", 30003, 1, "+14155550142")
    assert message.date_created.year == 2026 and message.messaging_service_sid.startswith("MG")

    profile = tw.parse_bundle(CustomerProfilesInstance(trusthub, load("customer_profile.json")))
    product = tw.parse_bundle(TrustProductsInstance(trusthub, load("trust_product.json")))
    assert (profile.status, product.status) == ("in-review", "twilio-approved")

    brands = [tw.parse_brand(i) for i in BrandRegistrationPage(
        messaging, SdkResponse(200, (DATA / "brand_registrations_page.json").read_text()), {})]
    assert [(b.status, b.tcr_id, b.brand_score) for b in brands] == [("APPROVED", "BXYZ123", 77), ("FAILED", None, None)]
    assert brands[1].failure_reason and brands[1].errors

    service = tw.parse_service(ServiceInstance(messaging, load("messaging_service.json")))
    assert service.inbound_request_url.endswith("/sms") and service.status_callback.endswith("/sms-status")

    campaign = tw.parse_campaign(UsAppToPersonInstance(messaging, load("us_a2p_campaign.json"),
                                                       "MG00112233445566778899aabbccddeeff"))
    assert (campaign.campaign_status, campaign.campaign_id, campaign.us_app_to_person_usecase) == (
        "VERIFIED", "CABC123", "CUSTOMER_CARE")

    with pytest.raises(ProviderError) as exc:  # a reply without its sid is not silently accepted
        tw.parse_message(MessageInstance(v2010, {"status": "queued"}, acct))
    assert "sid" in exc.value.message


def test_error_mapping_of_the_newer_error_shape():
    from twilio.base.exceptions import TwilioServiceException
    exc = TwilioServiceException(type_uri="https://www.twilio.com/docs/errors/20429", title="Too Many Requests",
                                 status=429, code=20429, detail="Slow down", method="POST", uri="/x")
    err = tw._error(exc)
    assert (err.provider, err.status, err.code, err.retryable, err.message) == ("twilio", 429, "20429", True, "Slow down")
