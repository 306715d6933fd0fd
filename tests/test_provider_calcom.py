"""Contract tests: the real Cal.com adapter against its local fake, plus its parsers against the
example payloads in tests/data/calcom (written from ../shared/providers.md section 4.1)."""
from __future__ import annotations

import datetime as dt
import json
import pathlib
import types

import aiohttp
import pytest
from aiohttp import web

from providers.calcom import (OUTCOME_UNKNOWN, SLOT_UNAVAILABLE, CalcomClient, EventType, parse_booking,
                              parse_event_type, parse_slots)
from providers.errors import ProviderError
from providers.fakes.calcom import CalcomFake
from providers.fakes.server import FakeServer, make_app

DATA = pathlib.Path(__file__).parent / "data" / "calcom"
NOW = dt.datetime(2050, 9, 1, tzinfo=dt.timezone.utc)  # a Thursday; the fake's clock
MONDAY = dt.date(2050, 9, 5)
KEY_A, KEY_B = "cal_live_tenant_a_0123456789abcdef", "cal_live_tenant_b_fedcba9876543210"


@pytest.fixture
async def env():
    fake = CalcomFake(now=lambda: NOW)
    fake.add_tenant(KEY_A, name="Dr Ada", timezone="America/New_York")
    fake.add_tenant(KEY_B, name="Bo", timezone="Europe/Paris")
    et_a = fake.add_event_type(KEY_A, title="Dental check-up", length_minutes=30)
    et_b = fake.add_event_type(KEY_B, title="Haircut", length_minutes=60, availability={0: [("10:00", "12:00")]})
    server = await FakeServer(fake.app).start()
    server.faults.timeout_seconds = 1
    clients: list[CalcomClient] = []

    def client(key: str = KEY_A, **kw) -> CalcomClient:
        c = CalcomClient(key, base_url=f"{server.url}/v2", backoff=0.01, **kw)
        clients.append(c)
        return c

    yield types.SimpleNamespace(fake=fake, server=server, et_a=et_a, et_b=et_b, client=client)
    for c in clients:
        await c.close()
    await server.stop()


async def first_slot(cal: CalcomClient, et: int, tz: str = "America/New_York"):
    return (await cal.list_slots(et, MONDAY, MONDAY, tz))[0]


# ---- operations ----------------------------------------------------------------------------------

async def test_verify_key_and_event_type(env):
    cal = env.client()
    assert await cal.verify(env.et_a) == EventType(id=env.et_a, title="Dental check-up", slug="dental-check-up",
                                                   length_minutes=30)
    with pytest.raises(ProviderError) as exc:
        await cal.verify(env.et_b)  # tenant B's event type is invisible to tenant A
    assert (exc.value.provider, exc.value.status, exc.value.retryable) == ("calcom", 404, False)
    assert f"Event type with id {env.et_b} not found" in exc.value.message


async def test_bad_key_is_a_clear_error_without_the_key(env):
    bad = "cal_live_not_a_real_key_123"
    with pytest.raises(ProviderError) as exc:
        await env.client(bad).verify(env.et_a)
    err = exc.value
    assert (err.provider, err.status, err.retryable) == ("calcom", 401, False)
    assert "credentials" in err.message and "Invalid API Key" in err.message
    assert bad not in str(err) and bad not in repr(err)


async def test_slots_come_in_the_requested_zone(env):
    cal = env.client()
    paris = await cal.list_slots(env.et_a, MONDAY, MONDAY, "Europe/Paris")
    # 9:00-17:00 in New York (EDT) is 15:00-23:00 in Paris (CEST): 16 half-hour slots
    assert len(paris) == 16
    assert paris[0].start.isoformat() == "2050-09-05T15:00:00+02:00" and str(paris[0].start.tzinfo) == "Europe/Paris"
    assert paris[0].end == paris[0].start + dt.timedelta(minutes=30)
    ny = await cal.list_slots(env.et_a, MONDAY, MONDAY, "America/New_York")
    assert [s.start for s in ny] == [s.start for s in paris] and ny[0].start.hour == 9
    assert await cal.list_slots(env.et_a, dt.date(2050, 9, 3), dt.date(2050, 9, 4), "America/New_York") == []
    # an exact instant range, and slots are public: tenant A may read tenant B's (as on Cal.com)
    start = dt.datetime(2050, 9, 5, 8, tzinfo=dt.timezone.utc)
    b = await cal.list_slots(env.et_b, start, start + dt.timedelta(minutes=59), "Europe/Paris")
    assert [s.start.hour for s in b] == [10]  # 10:00 Paris = 08:00 UTC; 11:00 starts after the range
    assert len(await cal.list_slots(env.et_b, start, start + dt.timedelta(hours=2), "Europe/Paris")) == 2
    with pytest.raises(ValueError):
        await cal.list_slots(env.et_a, MONDAY, MONDAY, "Mars/Olympus")


async def test_book_then_slot_is_gone_and_double_booking_fails(env):
    cal = env.client()
    slot = await first_slot(cal, env.et_a)
    booking = await cal.create_booking(env.et_a, slot.start, name="Sam Caller", email="sam@example.com",
                                       timezone="America/New_York", phone="+15551234567")
    assert booking.status == "accepted" and len(booking.uid) == 22 and isinstance(booking.id, int)
    assert (booking.start, booking.end) == (slot.start, slot.end) and booking.event_type_id == env.et_a
    assert booking.start.tzinfo is not None
    assert (await first_slot(cal, env.et_a)).start == slot.start + dt.timedelta(minutes=30)
    stored = env.fake.booking(booking.uid)
    assert stored["attendees"][0]["email"] == "sam@example.com" and stored["attendees"][0]["phoneNumber"] == "+15551234567"
    for status in (400, 409):  # the v2 status for a taken slot is unconfirmed: both are handled
        env.fake.slot_taken_status = status
        with pytest.raises(ProviderError) as exc:
            await cal.create_booking(env.et_a, slot.start, name="Late", email="late@example.com",
                                     timezone="Europe/Paris")
        assert (exc.value.code, exc.value.status, exc.value.retryable) == (SLOT_UNAVAILABLE, status, False)
    assert len(env.fake.bookings_of(KEY_A)) == 1
    assert await cal.get_booking(booking.uid) == booking


async def test_cancel_frees_the_slot_and_is_safe_to_repeat(env):
    cal = env.client()
    slot = await first_slot(cal, env.et_a)
    booking = await cal.create_booking(env.et_a, slot.start, name="Sam", email=None, phone="+15551234567",
                                       timezone="America/New_York")
    cancelled = await cal.cancel_booking(booking.uid, "Caller asked to cancel")
    assert (cancelled.uid, cancelled.status, cancelled.cancellation_reason) == (booking.uid, "cancelled",
                                                                                "Caller asked to cancel")
    assert env.fake.booking(booking.uid)["status"] == "cancelled"
    assert (await first_slot(cal, env.et_a)).start == slot.start
    again = await cal.cancel_booking(booking.uid)  # Cal.com refuses a second cancel; the adapter resolves it
    assert again.status == "cancelled"
    with pytest.raises(ProviderError) as exc:
        await cal.cancel_booking("NoSuchBooking123456789")
    assert exc.value.status == 404


async def test_one_tenant_cannot_see_or_cancel_anothers_booking(env):
    a, b = env.client(KEY_A), env.client(KEY_B)
    slot = await first_slot(a, env.et_a)
    booking = await a.create_booking(env.et_a, slot.start, name="Sam", email="sam@example.com",
                                     timezone="America/New_York")
    for call in (b.get_booking(booking.uid), b.cancel_booking(booking.uid, "not yours")):
        with pytest.raises(ProviderError) as exc:
            await call
        assert exc.value.status == 404 and exc.value.provider == "calcom"
    assert env.fake.booking(booking.uid)["status"] == "accepted"
    assert env.fake.bookings_of(KEY_B) == [] and (await a.get_booking(booking.uid)).status == "accepted"


async def test_validation_errors(env):
    cal = env.client()
    past = dt.datetime(2050, 8, 29, 13, tzinfo=dt.timezone.utc)
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(env.et_a, past, name="Sam", email="sam@example.com", timezone="America/New_York")
    assert (exc.value.status, exc.value.code) == (400, None) and "past" in exc.value.message
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(env.et_a, (await first_slot(cal, env.et_a)).start, name="Sam", email="not-an-email",
                                 timezone="America/New_York")
    assert exc.value.status == 400 and "email" in exc.value.message
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(999999, dt.datetime(2050, 9, 5, 13, tzinfo=dt.timezone.utc), name="Sam",
                                 email="sam@example.com", timezone="America/New_York")
    assert exc.value.status == 404
    with pytest.raises(ValueError):  # naive times are refused before any call
        await cal.create_booking(env.et_a, dt.datetime(2050, 9, 5, 9), name="S", email="s@example.com", timezone="UTC")
    with pytest.raises(ValueError):
        await cal.create_booking(env.et_a, past, name="S", email=None, timezone="UTC")
    with pytest.raises(ValueError):
        await cal.get_booking("../../event-types/1")


async def test_fake_routes_on_the_api_version_header(env):
    async with aiohttp.ClientSession() as http:
        url = f"{env.server.url}/v2/event-types/{env.et_a}"
        async with http.get(url, headers={"Authorization": f"Bearer {KEY_A}"}) as resp:
            body = await resp.json()
        assert resp.status == 400 and body["status"] == "error" and body["error"]["code"] == "BadRequestException"
        async with http.get(url, headers={"Authorization": f"Bearer {KEY_A}", "cal-api-version": "2024-06-14"}) as resp:
            assert resp.status == 200 and (await resp.json())["data"]["ownerId"]


# ---- faults --------------------------------------------------------------------------------------

async def test_reads_are_retried_on_5xx_and_429(env):
    cal = env.client()
    env.server.faults.fail_next("5xx", times=2)
    assert (await cal.verify(env.et_a)).id == env.et_a
    env.server.faults.fail_next("429")
    assert len(await cal.list_slots(env.et_a, MONDAY, MONDAY, "UTC")) == 16
    slot = await first_slot(cal, env.et_a)
    booking = await cal.create_booking(env.et_a, slot.start, name="S", email="s@example.com", timezone="UTC")
    env.server.faults.fail_next("5xx")
    assert (await cal.cancel_booking(booking.uid)).status == "cancelled"


async def test_create_is_not_retried_and_says_the_outcome_is_unknown(env):
    cal = env.client()
    slot = await first_slot(cal, env.et_a)
    env.server.faults.fail_next("5xx")
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(env.et_a, slot.start, name="S", email="s@example.com", timezone="UTC")
    assert (exc.value.code, exc.value.retryable, exc.value.status) == (OUTCOME_UNKNOWN, False, 503)
    assert env.fake.bookings_of(KEY_A) == []  # one attempt only: the fault ate it
    env.server.faults.fail_next("429")  # a rate limit means nothing was done: that one may be retried
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(env.et_a, slot.start, name="S", email="s@example.com", timezone="UTC")
    assert (exc.value.status, exc.value.retryable) == (429, True) and exc.value.code != OUTCOME_UNKNOWN
    env.server.faults.fail_next("malformed")
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(env.et_a, slot.start, name="S", email="s@example.com", timezone="UTC")
    assert exc.value.code == OUTCOME_UNKNOWN and not exc.value.retryable


async def test_timeout_and_malformed_reply(env):
    cal = env.client(timeout=0.3, attempts=1)
    env.server.faults.fail_next("timeout")
    with pytest.raises(ProviderError) as exc:
        await cal.verify(env.et_a)
    assert exc.value.retryable and "timed out" in exc.value.message and exc.value.provider == "calcom"
    env.server.faults.fail_next("malformed")
    with pytest.raises(ProviderError) as exc:
        await cal.list_slots(env.et_a, MONDAY, MONDAY, "UTC")
    assert "not JSON" in exc.value.message
    env.server.faults.fail_next("timeout")
    with pytest.raises(ProviderError) as exc:
        await cal.create_booking(env.et_a, dt.datetime(2050, 9, 5, 13, tzinfo=dt.timezone.utc), name="S",
                                 email="s@example.com", timezone="UTC")
    assert exc.value.code == OUTCOME_UNKNOWN and not exc.value.retryable


# ---- parsers against the stored examples ---------------------------------------------------------

def example(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def test_parsers_read_the_documented_examples():
    et = parse_event_type(example("event_type")["body"])
    assert et == EventType(id=812345, title="Dental check-up", slug="dental-check-up", length_minutes=45)
    slots = parse_slots(example("slots_range")["body"], "Europe/Paris")
    assert [s.start.isoformat() for s in slots] == ["2050-09-05T09:00:00+02:00", "2050-09-05T09:45:00+02:00",
                                                    "2050-09-06T09:00:00+02:00"]
    assert slots[0].end is not None and slots[0].end - slots[0].start == dt.timedelta(minutes=45)
    plain = parse_slots(example("slots_starts")["body"], "UTC")
    assert [s.start.hour for s in plain] == [13, 13] and plain[0].end is None and str(plain[0].start.tzinfo) == "UTC"
    booking = parse_booking(example("booking_created")["body"])
    assert (booking.id, booking.uid, booking.status, booking.event_type_id) == (90210, "7kQzW3nXcPq9RtYbLm2aFd",
                                                                                "accepted", 812345)
    assert booking.start == dt.datetime(2050, 9, 5, 7, tzinfo=dt.timezone.utc) and booking.end.minute == 45
    cancelled = parse_booking(example("booking_cancelled")["body"])
    assert (cancelled.status, cancelled.cancellation_reason) == ("cancelled", "Caller asked to cancel")
    recurring = parse_booking(example("bookings_recurring")["body"])
    assert (recurring.id, recurring.event_type_id) == (501, 77)


@pytest.mark.parametrize("parse,bad", [
    (parse_booking, None), (parse_booking, []), (parse_booking, {"status": "success"}),
    (parse_booking, {"status": "success", "data": {"id": "x"}}), (parse_event_type, {"status": "success", "data": []}),
    (lambda b: parse_slots(b, "UTC"), {"status": "success", "data": {"2050-09-05": [{"start": "yesterday"}]}}),
    (lambda b: parse_slots(b, "UTC"), {"status": "success", "data": {"2050-09-05": [{"start": "2050-09-05T09:00"}]}}),
])
def test_parsers_refuse_other_shapes(parse, bad):
    with pytest.raises(ProviderError) as exc:
        parse(bad)
    assert exc.value.provider == "calcom" and not exc.value.retryable


@pytest.mark.parametrize("name,status,code", [
    ("error_unauthorized", 401, None), ("error_not_found", 404, None), ("error_validation", 400, None),
    ("error_slot_taken_400", 400, SLOT_UNAVAILABLE), ("error_slot_taken_409", 409, SLOT_UNAVAILABLE)])
async def test_documented_errors_through_the_adapter(name, status, code):
    """Replays each stored error reply to the real adapter, from a bare server that only echoes it."""
    ex = example(name)
    app = make_app()

    async def replay(request: web.Request) -> web.Response:
        return web.json_response(ex["body"], status=ex["status"])

    app.router.add_route("*", "/{tail:.*}", replay)
    server = await FakeServer(app).start()
    cal = CalcomClient(KEY_A, base_url=f"{server.url}/v2", backoff=0.01)
    try:
        with pytest.raises(ProviderError) as exc:
            await cal.create_booking(1, dt.datetime(2050, 9, 5, 13, tzinfo=dt.timezone.utc), name="S",
                                     email="s@example.com", timezone="UTC")
    finally:
        await cal.close()
        await server.stop()
    assert (exc.value.provider, exc.value.status, exc.value.retryable) == ("calcom", status, False)
    assert ex["body"]["error"]["message"] in exc.value.message
    if code:
        assert exc.value.code == code


async def test_a_provider_echoing_our_key_never_leaks_it():
    app = make_app()

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"status": "error", "error": {"code": "UnauthorizedException",
                                  "message": f"bad header {request.headers['Authorization']}"}}, status=401)

    app.router.add_route("*", "/{tail:.*}", echo)
    server = await FakeServer(app).start()
    cal = CalcomClient(KEY_A, base_url=f"{server.url}/v2")
    try:
        with pytest.raises(ProviderError) as exc:
            await cal.verify(1)
    finally:
        await cal.close()
        await server.stop()
    assert KEY_A not in str(exc.value) and "[redacted]" in exc.value.message
