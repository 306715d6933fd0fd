"""The widget token exchange: embed token + allowed Origin -> Twilio Voice access token."""
from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import pytest

from providers import twilio_tokens
from gateway import security
from gateway.pipeline import SERVICES
from tests.conftest import ADMIN_KEY, TWILIO, assert_error, listening

URL = "/api/widget/token"
SITE = "https://www.acme-dental.com"
PHONE = "+15551230001"


async def pro_org(signup, db, name="Acme Dental", phone=PHONE, plan="PRO"):
    t = await signup(plan=plan, org_name=name)
    await db.execute("UPDATE organizations SET phone_number = $1 WHERE id = $2", phone, uuid.UUID(t.org_id))
    return t


async def new_token(client, tenant, domains=("www.acme-dental.com",)):
    resp = await client.post("/api/embed-token", json={"allowedDomains": list(domains)}, headers=tenant.auth)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def exchange(client, token, origin=SITE, **headers):
    if origin is not None:
        headers["Origin"] = origin
    return await client.post(URL, json={"embedToken": token}, headers=headers)


def decode(token):
    return jwt.get_unverified_header(token), jwt.decode(token, TWILIO["twilio_api_key_secret"], algorithms=["HS256"])


async def test_exchange_returns_a_signed_voice_token(client, signup, db):
    t = await pro_org(signup, db)
    made = await new_token(client, t)
    resp = await exchange(client, made["token"])
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"token", "identity", "phoneNumber", "orgName", "expiresIn"}
    assert body["phoneNumber"] == PHONE
    assert body["orgName"] == "Acme Dental"
    assert body["expiresIn"] == 3600
    assert body["identity"].startswith(f"widget-{uuid.UUID(t.org_id).hex[:8]}-")

    header, claims = decode(body["token"])
    assert header["alg"] == "HS256" and header["typ"] == "JWT" and header["cty"] == "twilio-fpa;v=1"
    assert claims["iss"] == TWILIO["twilio_api_key_sid"]
    assert claims["sub"] == TWILIO["twilio_account_sid"]
    assert claims["exp"] - claims["nbf"] == 3600
    assert claims["jti"].startswith(TWILIO["twilio_api_key_sid"] + "-")
    assert claims["grants"]["identity"] == body["identity"]
    voice = claims["grants"]["voice"]
    assert voice["outgoing"]["application_sid"] == TWILIO["twilio_twiml_app_sid"]
    assert voice["outgoing"]["params"] == {"organizationId": t.org_id}
    assert "incoming" not in voice  # the widget only calls out
    # The secret is nowhere in the reply.
    assert TWILIO["twilio_api_key_secret"] not in await resp.text()

    # Each exchange gets its own identity.
    again = await (await exchange(client, made["token"])).json()
    assert again["identity"] != body["identity"]


def test_signing_is_local_and_bounded():
    secret = "s" * 32
    creds = twilio_tokens.VoiceCredentials("AC1", "SK1", secret, "AP1")
    token = twilio_tokens.voice_access_token(creds, "widget-x", ttl=60, now=1_700_000_000)
    claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_exp": False})
    assert (claims["nbf"], claims["exp"]) == (1_700_000_000, 1_700_000_060)
    assert claims["grants"] == {"identity": "widget-x", "voice": {"outgoing": {"application_sid": "AP1"}}}
    for ttl in (0, 86401):
        with pytest.raises(ValueError):
            twilio_tokens.voice_access_token(creds, "x", ttl=ttl)


def test_token_matches_what_the_official_twilio_sdk_produces():
    """Our encoder must say exactly what twilio's AccessToken + VoiceGrant say."""
    from twilio.jwt.access_token import AccessToken
    from twilio.jwt.access_token.grants import VoiceGrant

    secret = "k" * 32
    creds = twilio_tokens.VoiceCredentials("AC" + "1" * 32, "SK" + "2" * 32, secret, "AP" + "3" * 32)
    for params in (None, {"organizationId": "org-1"}):
        ours = twilio_tokens.voice_access_token(creds, "widget-abc", ttl=3600, params=params, now=1_700_000_000)
        sdk = AccessToken(creds.account_sid, creds.api_key_sid, secret, identity="widget-abc",
                          nbf=1_700_000_000, valid_until=1_700_003_600)
        sdk.add_grant(VoiceGrant(outgoing_application_sid=creds.twiml_app_sid, outgoing_application_params=params))
        reference = sdk.to_jwt()
        assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(reference)
        mine = jwt.decode(ours, secret, algorithms=["HS256"], options={"verify_exp": False})
        theirs = jwt.decode(reference, secret, algorithms=["HS256"], options={"verify_exp": False})
        # jti is "<API key sid>-<issue time>"; the SDK takes the wall clock there, we take nbf.
        assert mine.pop("jti") == f"{creds.api_key_sid}-1700000000"
        assert theirs.pop("jti").startswith(f"{creds.api_key_sid}-")
        assert mine == theirs


async def test_origin_must_match_the_allow_list(client, signup, db):
    t = await pro_org(signup, db)
    token = (await new_token(client, t, domains=["example.com", "*.shop.example.net"]))["token"]
    ok = ["https://example.com", "http://example.com:8080", "https://a.shop.example.net", "https://a.b.shop.example.net"]
    refused_real = ["https://www.example.com", "https://evilexample.com", "https://example.com.evil.net",
                    "https://shop.example.net", "https://evilshop.example.net", "http://localhost:3000"]
    for origin in ok:
        resp = await exchange(client, token, origin)
        assert resp.status == 200, origin
        assert resp.headers["Access-Control-Allow-Origin"] == origin
    for origin in refused_real:
        resp = await exchange(client, token, origin)
        assert resp.status == 403, origin
        assert_error(await resp.json(), "origin_not_allowed")
        # The browser must be able to read the refusal.
        assert resp.headers["Access-Control-Allow-Origin"] == origin
    for origin in (None, "null", "ftp://example.com", "https://example.com/path", "https://user@example.com",
                   "example.com"):
        resp = await exchange(client, token, origin)
        assert resp.status == 403, origin
        assert_error(await resp.json(), "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_unknown_malformed_and_missing_tokens_are_403_with_cors(client, signup, db):
    await pro_org(signup, db)
    for body in ({"embedToken": "ept_" + "A" * 43}, {"embedToken": "ept_short"}, {"embedToken": "abc"},
                 {"embedToken": 5}, {}):
        resp = await client.post(URL, json=body, headers={"Origin": SITE})
        assert resp.status == 403, body
        assert_error(await resp.json(), "invalid_embed_token")
        assert resp.headers["Access-Control-Allow-Origin"] == SITE


async def test_bad_bodies_are_4xx_not_500(client, signup, db):
    t = await pro_org(signup, db)
    token = (await new_token(client, t))["token"]
    resp = await client.post(URL, json={"embedToken": token, "extra": 1}, headers={"Origin": SITE})
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    resp = await client.post(URL, data=b"{nope", headers={"Origin": SITE, "Content-Type": "application/json"})
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    resp = await client.post(URL, data=b"embedToken=" + token.encode(),
                             headers={"Origin": SITE, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 415
    resp = await client.post(URL, json={"embedToken": token + "x" * 3000}, headers={"Origin": SITE})
    assert resp.status == 413


async def test_revocation_is_immediate(client, signup, db):
    t = await pro_org(signup, db)
    made = await new_token(client, t)
    assert (await exchange(client, made["token"])).status == 200
    resp = await client.delete("/api/embed-token", params={"id": made["id"]}, headers=t.auth)
    assert resp.status == 200
    resp = await exchange(client, made["token"])
    assert resp.status == 403
    assert_error(await resp.json(), "invalid_embed_token")
    assert resp.headers["Access-Control-Allow-Origin"] == SITE


async def test_preflight_from_any_origin_is_204_before_auth(client, db):
    for origin in ("https://any-site.example", "http://localhost:5173"):
        resp = await client.options(URL, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "Content-Type"})
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "content-type"
        assert "Access-Control-Allow-Credentials" not in resp.headers
    resp = await client.options(URL, headers={"Origin": "null", "Access-Control-Request-Method": "POST"})
    assert resp.status == 403


async def test_last_used_is_set_on_first_use_then_throttled(client, signup, db, monkeypatch):
    t = await pro_org(signup, db)
    made = await new_token(client, t)
    token_id = uuid.UUID(made["id"])
    assert await db.fetchval("SELECT last_used_at FROM embed_tokens WHERE id = $1", token_id) is None
    assert (await exchange(client, made["token"])).status == 200
    first = await db.fetchval("SELECT last_used_at FROM embed_tokens WHERE id = $1", token_id)
    assert first is not None
    listed = await (await client.get("/api/embed-token", headers=t.auth)).json()
    assert listed["tokens"][0]["lastUsedAt"] == first.isoformat()
    # Within a minute: no new write.
    assert (await exchange(client, made["token"])).status == 200
    assert await db.fetchval("SELECT last_used_at FROM embed_tokens WHERE id = $1", token_id) == first
    # Older than a minute (in the database and in this process's memory of its last write): refreshed.
    await db.execute("UPDATE embed_tokens SET last_used_at = now() - interval '2 minutes' WHERE id = $1", token_id)
    later = time.monotonic() + 120
    monkeypatch.setattr("gateway.handlers.widget.time.monotonic", lambda: later)
    stale = await db.fetchval("SELECT last_used_at FROM embed_tokens WHERE id = $1", token_id)
    assert (await exchange(client, made["token"])).status == 200
    assert await db.fetchval("SELECT last_used_at FROM embed_tokens WHERE id = $1", token_id) > stale


async def test_rate_limited_per_ip(make_client, signup, db):
    tight = await make_client(rate_limit_multiplier=0.05)  # widget_per_ip: 60 -> 3 a minute
    t = await pro_org(signup, db)
    token = (await new_token(tight, t))["token"]
    for _ in range(3):
        assert (await exchange(tight, token)).status == 200
    resp = await exchange(tight, token)
    assert resp.status == 429
    body = await resp.json()
    assert_error(body, "rate_limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    # Guessing tokens from the same address costs the same quota.
    resp = await exchange(tight, "ept_" + "B" * 43)
    assert resp.status == 429


async def test_rate_limited_per_token(make_client, signup, db):
    # widget_per_ip: 60 -> 1, widget_per_token: 600 -> 3; each request from its own address.
    tight = await make_client(rate_limit_multiplier=0.005, trust_forwarded_for=True)
    t = await pro_org(signup, db)
    token = (await new_token(tight, t))["token"]
    other = (await new_token(tight, t))["token"]
    for i in range(3):
        assert (await exchange(tight, token, **{"X-Forwarded-For": f"203.0.113.{i}"})).status == 200
    resp = await exchange(tight, token, **{"X-Forwarded-For": "203.0.113.99"})
    assert resp.status == 429
    assert_error(await resp.json(), "rate_limited")
    assert int(resp.headers["Retry-After"]) >= 1
    # Another token is counted separately.
    assert (await exchange(tight, other, **{"X-Forwarded-For": "203.0.113.100"})).status == 200


@pytest.mark.parametrize("missing", sorted(TWILIO))
async def test_missing_twilio_settings_are_503(make_client, signup, db, missing):
    t = await pro_org(signup, db)
    unconfigured = await make_client(**{missing: None})
    token = (await new_token(unconfigured, t))["token"]
    resp = await exchange(unconfigured, token)
    assert resp.status == 503
    assert_error(await resp.json(), "provider_not_configured")
    assert resp.headers["Access-Control-Allow-Origin"] == SITE


async def test_no_phone_number_yet_is_null(client, signup, db):
    t = await pro_org(signup, db, phone=None)
    resp = await exchange(client, (await new_token(client, t))["token"])
    assert resp.status == 200
    body = await resp.json()
    assert body["phoneNumber"] is None and body["orgName"] == "Acme Dental"
    assert decode(body["token"])[1]["grants"]["identity"] == body["identity"]


async def test_downgraded_suspended_or_cancelled_organizations_are_refused(client, signup, db):
    t = await pro_org(signup, db)
    token = (await new_token(client, t))["token"]
    org = uuid.UUID(t.org_id)
    assert (await exchange(client, token)).status == 200  # the token's lookup is now cached

    async def admin_patch(change: dict) -> None:
        # Through the admin API, as in production: it tells every process's cache about the change.
        resp = await client.patch(f"/api/admin/organizations/{org}", json=change, headers={"x-admin-key": ADMIN_KEY})
        assert resp.status == 200, await resp.text()

    for column, value, code in (("plan", "STARTER", "plan_upgrade_required"), ("plan", None, "plan_upgrade_required"),
                                ("status", "SUSPENDED", "organization_suspended"),
                                ("status", "CANCELLED", "organization_cancelled")):
        await admin_patch({"plan": "PRO", "status": "ACTIVE"})
        await admin_patch({column: value})
        resp = await exchange(client, token)
        assert resp.status == 403, (column, value)
        assert_error(await resp.json(), code)
        assert resp.headers["Access-Control-Allow-Origin"] == SITE
    await admin_patch({"plan": "PRO", "status": "ACTIVE"})
    assert (await exchange(client, token)).status == 200


async def test_tenant_isolation(client, signup, db):
    a = await pro_org(signup, db, name="Org A", phone="+15550000001")
    b = await pro_org(signup, db, name="Org B", phone="+15550000002")
    token_a = (await new_token(client, a, domains=["a.example.com"]))["token"]
    token_b = (await new_token(client, b, domains=["b.example.com"]))["token"]
    body_a = await (await exchange(client, token_a, "https://a.example.com")).json()
    body_b = await (await exchange(client, token_b, "https://b.example.com")).json()
    assert (body_a["orgName"], body_a["phoneNumber"]) == ("Org A", "+15550000001")
    assert (body_b["orgName"], body_b["phoneNumber"]) == ("Org B", "+15550000002")
    assert decode(body_a["token"])[1]["grants"]["voice"]["outgoing"]["params"]["organizationId"] == a.org_id
    assert decode(body_b["token"])[1]["grants"]["voice"]["outgoing"]["params"]["organizationId"] == b.org_id
    # A's token cannot be used from B's website, and B revoking has no effect on A's token.
    assert (await exchange(client, token_a, "https://b.example.com")).status == 403
    a_id = await db.fetchval("SELECT id FROM embed_tokens WHERE organization_id = $1", uuid.UUID(a.org_id))
    resp = await client.delete("/api/embed-token", params={"id": str(a_id)}, headers=b.auth)
    assert resp.status == 404
    assert (await exchange(client, token_a, "https://a.example.com")).status == 200
    # Only A's token was touched by A's exchanges.
    rows = await db.fetch("SELECT organization_id, last_used_at FROM embed_tokens")
    assert all(r["last_used_at"] is not None for r in rows)


async def test_revocation_is_immediate_even_when_the_token_is_cached(make_client, signup, db):
    """Two gateway processes (two apps on one database): each caches token lookups; a revocation
    made through one is refused by both at once (the other learns it through LISTEN/NOTIFY)."""
    one, two = await make_client(), await make_client()
    for app_client in (one, two):
        await listening(app_client)
    t = await pro_org(signup, db)
    made = await new_token(one, t)
    assert (await exchange(one, made["token"])).status == 200
    assert (await exchange(two, made["token"])).status == 200
    assert two.server.app[SERVICES].embed_token_cache.get(security.token_hash(made["token"])) is not None
    resp = await one.delete("/api/embed-token", params={"id": made["id"]}, headers=t.auth)
    assert resp.status == 200
    resp = await exchange(one, made["token"])
    assert resp.status == 403
    assert_error(await resp.json(), "invalid_embed_token")
    for _ in range(100):
        resp = await exchange(two, made["token"])
        if resp.status == 403:
            break
        await asyncio.sleep(0.02)
    assert resp.status == 403
    assert_error(await resp.json(), "invalid_embed_token")
