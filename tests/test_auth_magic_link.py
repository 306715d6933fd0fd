"""GET/HEAD /api/auth/magic-link: one-time, 15-minute sign-in links that HEAD probes do not burn."""
from __future__ import annotations

import uuid

import pytest

from gateway import security
from gateway.store import auth_tokens
from tests.conftest import PUBLIC_BASE_URL, assert_error

COOKIE = "next-auth.session-token"
URL = "/api/auth/magic-link"


@pytest.fixture
async def client(make_jarless):
    return await make_jarless()


async def mint(db, tenant, *, kind="magic_link", age="0 seconds", lifetime="15 minutes") -> str:
    """What the admin route does: a random token, only its SHA-256 stored."""
    token = security.new_token()
    await db.execute(
        """INSERT INTO auth_tokens (token_hash, kind, user_id, organization_id, created_at, expires_at)
           VALUES ($1, $2, $3, $4, now() - $5::text::interval, now() - $5::text::interval + $6::text::interval)""",
        security.token_hash(token), kind, uuid.UUID(tenant.user_id), uuid.UUID(tenant.org_id), age, lifetime,
    )
    return token


async def whoami(client, token: str) -> dict:
    return await (await client.get("/api/auth/session", headers={"Cookie": f"{COOKIE}={token}"})).json()


async def used_at(db, token: str):
    return await db.fetchval("SELECT used_at FROM auth_tokens WHERE token_hash = $1", security.token_hash(token))


async def test_magic_link_signs_in_and_redirects_to_the_dashboard(client, db, signup):
    t = await signup()
    token = await mint(db, t)
    resp = await client.get(URL, params={"token": token}, allow_redirects=False, headers={"Host": "evil.example"})
    assert resp.status == 302
    assert resp.headers["Location"] == f"{PUBLIC_BASE_URL}/dashboard"  # never the request's Host
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    morsel = resp.cookies[COOKIE]
    assert morsel["httponly"] is True and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    session = morsel.value
    assert session != token and session != t.token
    body = await whoami(client, session)
    assert body["user"]["id"] == t.user_id and body["user"]["organizationId"] == t.org_id
    assert await used_at(db, token) is not None
    # The new session is stored hashed like any other.
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1", security.token_hash(session)) == 1
    assert await db.fetchval("SELECT count(*) FROM sessions") == 2


async def test_magic_link_cookie_is_secure_behind_https(make_jarless, db, signup):
    t = await signup()
    client = await make_jarless(public_base_url="https://gateway.test")
    resp = await client.get(URL, params={"token": await mint(db, t)}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://gateway.test/dashboard"
    assert resp.cookies["__Secure-next-auth.session-token"]["secure"] is True


async def test_magic_link_is_single_use(client, db, signup):
    t = await signup()
    token = await mint(db, t)
    assert (await client.get(URL, params={"token": token}, allow_redirects=False)).status == 302
    resp = await client.get(URL, params={"token": token}, allow_redirects=False)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_token")
    assert COOKIE not in resp.cookies
    assert "Location" not in resp.headers


@pytest.mark.parametrize(
    ("age", "lifetime", "status"),
    [
        ("14 minutes", "15 minutes", 302),  # one minute left
        ("16 minutes", "15 minutes", 400),  # expired a minute ago
        ("16 minutes", "1 hour", 400),  # a longer stored expiry does not stretch the 15 minutes
        ("0 seconds", "-1 second", 400),
    ],
)
async def test_magic_link_expires_after_15_minutes(client, db, signup, age, lifetime, status):
    t = await signup()
    token = await mint(db, t, age=age, lifetime=lifetime)
    resp = await client.get(URL, params={"token": token}, allow_redirects=False)
    assert resp.status == status
    if status == 400:
        assert_error(await resp.json(), "invalid_token")
        assert await used_at(db, token) is None
        assert COOKIE not in resp.cookies


async def test_store_mints_magic_links_for_15_minutes(db, signup):
    t = await signup()
    await auth_tokens.create(db, "magic_link", security.token_hash("x" * 43), uuid.UUID(t.user_id), uuid.UUID(t.org_id))
    row = await db.fetchrow("SELECT created_at, expires_at FROM auth_tokens")
    assert (row["expires_at"] - row["created_at"]).total_seconds() == 15 * 60


@pytest.mark.parametrize("token", ["unknown-token-value-123456", "0123456789"])
async def test_unknown_magic_link_is_400(client, db, signup, token):
    await signup()
    resp = await client.get(URL, params={"token": token}, allow_redirects=False)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_token")
    assert token not in await resp.text()


async def test_a_reset_token_is_not_a_magic_link(client, db, signup):
    t = await signup()
    token = await mint(db, t, kind="password_reset")
    resp = await client.get(URL, params={"token": token}, allow_redirects=False)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_token")
    assert (await client.head(URL, params={"token": token})).status == 400
    assert await used_at(db, token) is None


async def test_head_does_not_consume_the_link(client, db, signup):
    t = await signup()
    token = await mint(db, t)
    for extra in ({}, {"utm_source": "mail"}, {}):  # scanners may probe more than once, with tracking added
        resp = await client.head(URL, params={"token": token, **extra}, allow_redirects=False)
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert COOKIE not in resp.cookies
        assert await used_at(db, token) is None
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1  # signup()'s only
    resp = await client.get(URL, params={"token": token}, allow_redirects=False)
    assert resp.status == 302
    assert (await whoami(client, resp.cookies[COOKIE].value))["user"]["id"] == t.user_id
    # Once used, HEAD says so too.
    assert (await client.head(URL, params={"token": token})).status == 400


@pytest.mark.parametrize("query", ["", "?token=", "?token=short", "?token=unknown-token-value-123456"])
async def test_head_of_a_bad_link_is_400(client, db, query):
    resp = await client.head(URL + query)
    assert resp.status == 400


async def test_magic_link_signs_into_its_own_organization(client, db, signup):
    a, b = await signup(), await signup(org_name="Other Clinic")
    resp = await client.get(URL, params={"token": await mint(db, b)}, allow_redirects=False)
    body = await whoami(client, resp.cookies[COOKIE].value)
    assert body["user"]["id"] == b.user_id and body["user"]["organizationId"] == b.org_id
    assert body["user"]["organizationId"] != a.org_id
    # Already signed in as A: the link still signs in as its own user, with a new session.
    resp = await client.get(URL, params={"token": await mint(db, b)}, allow_redirects=False,
                            headers={"Cookie": f"{COOKIE}={a.token}"})
    assert resp.cookies[COOKIE].value != a.token
    assert (await whoami(client, resp.cookies[COOKIE].value))["user"]["id"] == b.user_id
    assert (await whoami(client, a.token))["user"]["id"] == a.user_id


async def test_a_password_reset_voids_outstanding_magic_links(client, db, signup):
    t = await signup()
    link = await mint(db, t)
    reset = await mint(db, t, kind="password_reset", lifetime="1 hour")
    assert (await client.post("/api/auth/reset-password", json={"token": reset, "password": "a new passphrase"})).status == 200
    resp = await client.get(URL, params={"token": link}, allow_redirects=False)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_token")
