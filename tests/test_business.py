"""Business settings: /api/business-info, /api/business-hours, /api/business-address."""
import json
import uuid

import pytest

from tests.conftest import assert_error

HOURS = {
    "monday": [{"open": "09:00", "close": "12:00"}, {"open": "13:00", "close": "17:30"}],
    "tuesday": [{"open": "09:00", "close": "17:00"}],
    "friday": [{"open": "18:00", "close": "24:00"}],
    "sunday": [],
}
ADDRESS = {"street": "1 Main St", "street2": None, "city": "Springfield", "region": "IL", "postalCode": "62701",
           "country": "US"}


async def stored(db, org_id, column):
    value = await db.fetchval(f"SELECT {column} FROM organizations WHERE id = $1", uuid.UUID(org_id))
    return json.loads(value) if isinstance(value, str) and column in ("business_hours", "business_address") else value


# ---- auth (every route) ---------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/business-info", None),
    ("PUT", "/api/business-info", {"businessType": "Dentist"}),
    ("GET", "/api/business-hours", None),
    ("PUT", "/api/business-hours", {"businessHours": HOURS}),
    ("GET", "/api/business-address", None),
    ("PUT", "/api/business-address", {"businessAddress": ADDRESS}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("cookie", [None, "next-auth.session-token=not-a-real-session", "next-auth.session-token="])
async def test_unauthenticated_is_401(client, db, method, path, body, cookie):
    headers = {"Cookie": cookie} if cookie else {}
    resp = await client.request(method, path, json=body, headers=headers)
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_suspended_organization_is_refused(client, db, signup, method, path, body):
    t = await signup()
    await db.execute("UPDATE organizations SET status = 'SUSPENDED' WHERE id = $1", uuid.UUID(t.org_id))
    resp = await client.request(method, path, json=body, headers=t.auth)
    assert resp.status == 403
    assert_error(await resp.json(), "organization_suspended")


# ---- business info --------------------------------------------------------------------------------

async def test_info_starts_empty_and_put_stores(client, db, signup):
    t = await signup()
    resp = await client.get("/api/business-info", headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"businessType": None, "businessDescription": None, "websiteUrl": None}

    body = {"businessType": "Dental clinic", "businessDescription": "Family dentistry since 1990",
            "websiteUrl": "https://Acme-Dental.example.com/Home?x=1"}
    resp = await client.put("/api/business-info", json=body, headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"success": True, **body}
    assert await stored(db, t.org_id, "website_url") == "https://Acme-Dental.example.com/Home?x=1"  # not normalised
    assert await stored(db, t.org_id, "business_type") == "Dental clinic"
    resp = await client.get("/api/business-info", headers=t.auth)
    assert await resp.json() == body


async def test_info_put_changes_only_the_fields_sent_and_null_clears(client, db, signup):
    t = await signup()
    full = {"businessType": "Dentist", "businessDescription": "Teeth", "websiteUrl": "http://example.com"}
    await client.put("/api/business-info", json=full, headers=t.auth)

    resp = await client.put("/api/business-info", json={"businessDescription": "Teeth and gums"}, headers=t.auth)
    assert await resp.json() == {"success": True, **full, "businessDescription": "Teeth and gums"}

    resp = await client.put("/api/business-info", json={"websiteUrl": None}, headers=t.auth)
    assert await resp.json() == {"success": True, "businessType": "Dentist", "businessDescription": "Teeth and gums",
                                 "websiteUrl": None}
    assert await stored(db, t.org_id, "website_url") is None

    resp = await client.put("/api/business-info", json={}, headers=t.auth)
    assert resp.status == 200
    assert (await resp.json())["businessType"] == "Dentist"


async def test_put_reply_is_read_back_from_the_database(client, db, signup):
    t = await signup()
    await db.execute("UPDATE organizations SET business_type = 'set elsewhere' WHERE id = $1", uuid.UUID(t.org_id))
    resp = await client.put("/api/business-info", json={"websiteUrl": "https://example.com"}, headers=t.auth)
    assert await resp.json() == {"success": True, "businessType": "set elsewhere", "businessDescription": None,
                                 "websiteUrl": "https://example.com"}


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "ftp://example.com/file", "example.com", "example", "http://", "https://",
    "http:/example.com", "https://exa mple.com", " https://example.com", "https://user:pw@example.com",
    "https://example.com:99999", "http://..", "data:text/html,hi", "//example.com", "",
])
async def test_info_refuses_bad_urls_without_writing(client, db, signup, url):
    t = await signup()
    await client.put("/api/business-info", json={"websiteUrl": "https://old.example.com"}, headers=t.auth)
    resp = await client.put("/api/business-info", json={"businessType": "New", "websiteUrl": url}, headers=t.auth)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"][0]["path"] == "websiteUrl"
    assert await stored(db, t.org_id, "website_url") == "https://old.example.com"
    assert await stored(db, t.org_id, "business_type") is None  # no partial write


@pytest.mark.parametrize("body", [
    {"businessType": 5},
    {"businessType": "x" * 101},
    {"websiteUrl": "https://example.com/" + "a" * 2000},
    {"unknown": "field"},
    ["not", "an", "object"],
])
async def test_info_schema_errors(client, db, signup, body):
    t = await signup()
    resp = await client.put("/api/business-info", json=body, headers=t.auth)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")


async def test_info_malformed_json(client, db, signup):
    t = await signup()
    resp = await client.put("/api/business-info", data=b"{nope", headers={**t.auth, "Content-Type": "application/json"})
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")


# ---- business hours -------------------------------------------------------------------------------

async def test_hours_default_and_roundtrip(client, db, signup):
    t = await signup()
    resp = await client.get("/api/business-hours", headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"businessHours": None, "timezone": "America/New_York"}

    resp = await client.put("/api/business-hours", json={"businessHours": HOURS, "timezone": "Europe/Paris"},
                            headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"success": True, "businessHours": HOURS, "timezone": "Europe/Paris"}
    assert await stored(db, t.org_id, "business_hours") == HOURS
    assert await stored(db, t.org_id, "timezone") == "Europe/Paris"

    # Without a timezone the stored one stays.
    resp = await client.put("/api/business-hours", json={"businessHours": {}}, headers=t.auth)
    assert await resp.json() == {"success": True, "businessHours": {}, "timezone": "Europe/Paris"}
    resp = await client.get("/api/business-hours", headers=t.auth)
    assert await resp.json() == {"businessHours": {}, "timezone": "Europe/Paris"}


async def test_hours_without_timezone_pins_the_default(client, db, signup):
    t = await signup()
    resp = await client.put("/api/business-hours", json={"businessHours": HOURS}, headers=t.auth)
    assert await resp.json() == {"success": True, "businessHours": HOURS, "timezone": "America/New_York"}
    assert await stored(db, t.org_id, "timezone") == "America/New_York"


@pytest.mark.parametrize(("hours", "paths"), [
    ({"monday": [{"open": "09:00", "close": "12:00"}, {"open": "11:00", "close": "13:00"}]}, ["businessHours.monday[1]"]),
    ({"tuesday": [{"open": "17:00", "close": "09:00"}]}, ["businessHours.tuesday[0]"]),
    ({"tuesday": [{"open": "09:00", "close": "09:00"}]}, ["businessHours.tuesday[0]"]),
    ({"friday": [{"open": "10:00", "close": "11:00"}, {"open": "08:00", "close": "18:00"}]}, ["businessHours.friday[0]"]),
    ({"monday": [{"open": "09:00", "close": "10:00"}, {"open": "09:30", "close": "09:00"}],
      "sunday": [{"open": "00:00", "close": "24:00"}, {"open": "12:00", "close": "13:00"}]},
     ["businessHours.monday[1]", "businessHours.sunday[1]"]),
])
async def test_hours_refuses_bad_intervals(client, db, signup, hours, paths):
    t = await signup()
    await client.put("/api/business-hours", json={"businessHours": HOURS, "timezone": "Europe/Paris"}, headers=t.auth)
    resp = await client.put("/api/business-hours", json={"businessHours": hours, "timezone": "Asia/Tokyo"}, headers=t.auth)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert [d["path"] for d in body["details"]] == paths
    assert paths[0] in body["error"]
    assert await stored(db, t.org_id, "business_hours") == HOURS
    assert await stored(db, t.org_id, "timezone") == "Europe/Paris"


async def test_hours_touching_intervals_are_fine(client, db, signup):
    t = await signup()
    hours = {"monday": [{"open": "13:00", "close": "17:00"}, {"open": "09:00", "close": "13:00"}]}
    resp = await client.put("/api/business-hours", json={"businessHours": hours}, headers=t.auth)
    assert resp.status == 200
    assert (await resp.json())["businessHours"] == hours


@pytest.mark.parametrize("tz", ["Mars/Olympus", "../etc", "/etc/passwd", "america/new_york", "localtime", "",
                                "America/New_York/../../etc", "EST5EDT\n"])
async def test_hours_refuses_unknown_timezones(client, db, signup, tz):
    t = await signup()
    resp = await client.put("/api/business-hours", json={"businessHours": HOURS, "timezone": tz}, headers=t.auth)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"][0]["path"] == "timezone"
    assert await stored(db, t.org_id, "business_hours") is None


@pytest.mark.parametrize("body", [
    {},
    {"businessHours": {"funday": []}},
    {"businessHours": {"monday": [{"open": "9:00", "close": "12:00"}]}},
    {"businessHours": {"monday": [{"open": "24:00", "close": "24:00"}]}},
    {"businessHours": {"monday": [{"open": "09:00"}]}},
    {"businessHours": {"monday": [{"open": "09:00", "close": "10:00"}] * 7}},
    {"businessHours": None},
    {"businessHours": {}, "timezone": 5},
])
async def test_hours_schema_errors(client, db, signup, body):
    t = await signup()
    resp = await client.put("/api/business-hours", json=body, headers=t.auth)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")


# ---- business address -----------------------------------------------------------------------------

async def test_address_roundtrip_and_clear(client, db, signup):
    t = await signup()
    resp = await client.get("/api/business-address", headers=t.auth)
    assert await resp.json() == {"businessAddress": None}

    resp = await client.put("/api/business-address", json={"businessAddress": ADDRESS}, headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"success": True, "businessAddress": ADDRESS}
    assert await stored(db, t.org_id, "business_address") == ADDRESS
    resp = await client.get("/api/business-address", headers=t.auth)
    assert await resp.json() == {"businessAddress": ADDRESS}

    resp = await client.put("/api/business-address", json={"businessAddress": None}, headers=t.auth)
    assert await resp.json() == {"success": True, "businessAddress": None}
    assert await stored(db, t.org_id, "business_address") is None


@pytest.mark.parametrize("address", [
    {"street": "1 Main St", "city": "Springfield"},
    {"street": "1 Main St", "city": "Springfield", "country": "usa"},
    {"street": "", "city": "Springfield", "country": "US"},
    {"street": "   ", "city": "Springfield", "country": "US"},
    {"street": "1 Main St", "city": "\t", "country": "US"},
    {"street": "1 Main St", "city": "Springfield", "country": "US", "planet": "Earth"},
    "1 Main St, Springfield",
])
async def test_address_refuses_bad_input(client, db, signup, address):
    t = await signup()
    await client.put("/api/business-address", json={"businessAddress": ADDRESS}, headers=t.auth)
    resp = await client.put("/api/business-address", json={"businessAddress": address}, headers=t.auth)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    assert await stored(db, t.org_id, "business_address") == ADDRESS


async def test_address_body_required(client, db, signup):
    t = await signup()
    resp = await client.put("/api/business-address", json={}, headers=t.auth)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"][0]["path"] == "businessAddress"


# ---- tenant isolation -----------------------------------------------------------------------------

async def test_two_organizations_never_see_each_other(client, db, signup):
    a, b = await signup(org_name="A"), await signup(org_name="B")
    await client.put("/api/business-info", json={"businessType": "A-type", "websiteUrl": "https://a.example"}, headers=a.auth)
    await client.put("/api/business-hours", json={"businessHours": HOURS, "timezone": "Europe/Paris"}, headers=a.auth)
    await client.put("/api/business-address", json={"businessAddress": ADDRESS}, headers=a.auth)

    assert await (await client.get("/api/business-info", headers=b.auth)).json() == {
        "businessType": None, "businessDescription": None, "websiteUrl": None}
    assert await (await client.get("/api/business-hours", headers=b.auth)).json() == {
        "businessHours": None, "timezone": "America/New_York"}
    assert await (await client.get("/api/business-address", headers=b.auth)).json() == {"businessAddress": None}

    # B's writes never land on A.
    await client.put("/api/business-info", json={"businessType": "B-type"}, headers=b.auth)
    await client.put("/api/business-address", json={"businessAddress": None}, headers=b.auth)
    assert await stored(db, a.org_id, "business_type") == "A-type"
    assert await stored(db, a.org_id, "business_address") == ADDRESS
    assert await stored(db, b.org_id, "business_type") == "B-type"
