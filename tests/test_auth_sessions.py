"""NextAuth-compatible sessions: csrf, credentials sign-in (JSON and form), session, sign-out,
server-side hashed sessions, the process cache, and login throttling."""
from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
from argon2 import PasswordHasher

from gateway import security
from tests.conftest import PASSWORD, PUBLIC_BASE_URL, assert_error, listening

COOKIE = "next-auth.session-token"
CSRF_COOKIE = "next-auth.csrf-token"
LOGIN = "/api/auth/callback/credentials"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def client(make_jarless):
    return await make_jarless()


def auth(token: str, name: str = COOKIE) -> dict[str, str]:
    return {"Cookie": f"{name}={token}"}


async def login(client, email: str, password: str = PASSWORD) -> str:
    resp = await client.post(LOGIN, json={"email": email, "password": password})
    assert resp.status == 200, await resp.text()
    return resp.cookies[COOKIE].value


async def whoami(client, token: str | None, name: str = COOKIE) -> dict:
    resp = await client.get("/api/auth/session", headers=auth(token, name) if token else None)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()


async def csrf(client, cookie_name: str = CSRF_COOKIE) -> tuple[str, str]:
    """(csrfToken, the csrf cookie's value) as NextAuth's client gets them."""
    resp = await client.get("/api/auth/csrf")
    assert resp.status == 200
    return (await resp.json())["csrfToken"], resp.cookies[cookie_name].value


async def form_login(client, email, password, csrf_token, csrf_cookie, cookie_name=CSRF_COOKIE, **fields):
    body = urlencode({"email": email, "password": password, "csrfToken": csrf_token, **fields})
    return await client.post(LOGIN, data=body, headers={**FORM, "Cookie": f"{cookie_name}={csrf_cookie}"},
                             allow_redirects=False)


# ---- csrf ----------------------------------------------------------------------------------------


async def test_csrf_returns_token_and_double_submit_cookie(client, db):
    resp = await client.get("/api/auth/csrf")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"csrfToken"}
    token = body["csrfToken"]
    assert isinstance(token, str) and len(token) >= 32
    morsel = resp.cookies[CSRF_COOKIE]
    assert morsel.value.split("|")[0] == token
    assert morsel["httponly"] is True and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert not morsel["secure"]
    # The same browser keeps its token; another browser gets another one.
    again = await client.get("/api/auth/csrf", headers={"Cookie": f"{CSRF_COOKIE}={morsel.value}"})
    assert (await again.json())["csrfToken"] == token
    other = await client.get("/api/auth/csrf")
    assert (await other.json())["csrfToken"] != token


# ---- credentials: JSON ---------------------------------------------------------------------------


async def test_json_login_returns_user_expires_and_session_cookie(client, db, signup):
    t = await signup()
    before = datetime.now(timezone.utc)
    resp = await client.post(LOGIN, json={"email": t.email, "password": PASSWORD})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"user", "expires"}
    assert body["user"] == {"id": t.user_id, "name": "Owner", "email": t.email, "organizationId": t.org_id, "role": "OWNER"}
    expires = datetime.fromisoformat(body["expires"])
    assert timedelta(days=29) < expires - before <= timedelta(days=30, minutes=1)
    morsel = resp.cookies[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # PUBLIC_BASE_URL is http in tests
    assert not morsel["domain"]
    assert "__Secure-" + COOKIE not in resp.cookies
    assert morsel["expires"]
    assert (await whoami(client, morsel.value))["user"]["id"] == t.user_id


async def test_https_base_url_gives_secure_prefixed_cookies(make_jarless, db):
    client = await make_jarless(public_base_url="https://gateway.test")
    assert (await client.post("/api/auth/register", json={
        "name": "Owner", "email": "tls@example.com", "password": PASSWORD, "organizationName": "TLS Inc"})).status == 201

    resp = await client.post(LOGIN, json={"email": "tls@example.com", "password": PASSWORD})
    assert resp.status == 200
    assert COOKIE not in resp.cookies
    morsel = resp.cookies["__Secure-next-auth.session-token"]
    assert morsel["secure"] is True and morsel["httponly"] is True
    assert morsel["samesite"] == "Lax" and morsel["path"] == "/"
    token = morsel.value
    assert (await whoami(client, token, "__Secure-next-auth.session-token"))["user"]["email"] == "tls@example.com"
    assert await whoami(client, token, COOKIE) == {}  # the unprefixed name is not read over https

    # The csrf cookie takes the __Host- prefix (Secure, Path=/, no Domain), and the form post works with it.
    token_, cookie = await csrf(client, "__Host-next-auth.csrf-token")
    resp = await client.get("/api/auth/csrf")
    host_morsel = resp.cookies["__Host-next-auth.csrf-token"]
    assert host_morsel["secure"] is True and host_morsel["path"] == "/" and not host_morsel["domain"]
    resp = await form_login(client, "tls@example.com", PASSWORD, token_, cookie, "__Host-next-auth.csrf-token",
                            callbackUrl="https://gateway.test/settings")
    assert resp.status == 302
    assert resp.headers["Location"] == "https://gateway.test/settings"
    assert resp.cookies["__Secure-next-auth.session-token"]["secure"] is True

    # Sign-out clears the prefixed cookie.
    resp = await client.post("/api/auth/signout", json={}, headers=auth(token, "__Secure-next-auth.session-token"))
    assert resp.status == 200
    cleared = resp.cookies["__Secure-next-auth.session-token"]
    assert cleared.value == "" and cleared["secure"] is True
    assert await whoami(client, token, "__Secure-next-auth.session-token") == {}


async def test_wrong_password_and_unknown_email_get_the_same_reply(client, db, signup):
    t = await signup()
    wrong = await client.post(LOGIN, json={"email": t.email, "password": "not the password"})
    unknown = await client.post(LOGIN, json={"email": "nobody@example.com", "password": "not the password"})
    assert wrong.status == unknown.status == 401
    wrong_body, unknown_body = await wrong.json(), await unknown.json()
    assert wrong_body == unknown_body
    assert_error(wrong_body, "invalid_credentials")
    assert COOKIE not in wrong.cookies and COOKIE not in unknown.cookies
    assert "not the password" not in await wrong.text()
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1  # only signup()'s


async def test_suspended_organization_cannot_sign_in(client, db, signup):
    t = await signup()
    await db.execute("UPDATE organizations SET status = 'SUSPENDED' WHERE id = $1", uuid.UUID(t.org_id))
    resp = await client.post(LOGIN, json={"email": t.email, "password": PASSWORD})
    assert resp.status == 403
    assert_error(await resp.json(), "organization_suspended")
    assert COOKIE not in resp.cookies


async def test_old_argon2_parameters_are_upgraded_at_sign_in(client, db, signup):
    t = await signup()
    old = PasswordHasher(time_cost=2, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    await db.execute("UPDATE users SET password_hash = $1", old)
    await login(client, t.email, PASSWORD)
    upgraded = await db.fetchval("SELECT password_hash FROM users")
    assert upgraded != old and upgraded.startswith("$argon2id$")
    assert not security.needs_rehash(upgraded)
    await login(client, t.email, PASSWORD)  # still the same password


# ---- credentials: NextAuth's form post -----------------------------------------------------------


@pytest.mark.parametrize(
    ("callback", "location"),
    [
        ("/settings?tab=voice", f"{PUBLIC_BASE_URL}/settings?tab=voice"),
        (f"{PUBLIC_BASE_URL}/billing", f"{PUBLIC_BASE_URL}/billing"),
        ("http://app.test/dashboard", "http://app.test/dashboard"),  # APP_ORIGINS: our own front end
        (None, f"{PUBLIC_BASE_URL}/dashboard"),
        ("", f"{PUBLIC_BASE_URL}/dashboard"),
        # Open-redirect attempts all land on our dashboard.
        ("https://evil.example/phish", f"{PUBLIC_BASE_URL}/dashboard"),
        ("//evil.example/phish", f"{PUBLIC_BASE_URL}/dashboard"),
        ("/\\evil.example", f"{PUBLIC_BASE_URL}/dashboard"),
        ("/\t/evil.example", f"{PUBLIC_BASE_URL}/dashboard"),
        ("http://gateway.test@evil.example/", f"{PUBLIC_BASE_URL}/dashboard"),
        ("http://gateway.test.evil.example/", f"{PUBLIC_BASE_URL}/dashboard"),
        ("https://gateway.test/", f"{PUBLIC_BASE_URL}/dashboard"),  # other scheme: another origin
        ("javascript:alert(document.cookie)", f"{PUBLIC_BASE_URL}/dashboard"),
        ("/ok\r\nSet-Cookie: pwned=1", f"{PUBLIC_BASE_URL}/dashboard"),  # no header splitting
    ],
)
async def test_form_login_redirects_to_same_origin_callback_only(client, db, signup, callback, location):
    t = await signup()
    token, cookie = await csrf(client)
    extra = {} if callback is None else {"callbackUrl": callback}
    resp = await form_login(client, t.email, PASSWORD, token, cookie, **extra)
    assert resp.status == 302
    assert resp.headers["Location"] == location
    assert "pwned" not in resp.headers.get("Set-Cookie", "")
    session = resp.cookies[COOKIE]
    assert session["httponly"] is True and session["samesite"] == "Lax"
    assert (await whoami(client, session.value))["user"]["email"] == t.email


async def test_form_login_with_json_true_returns_url(client, db, signup):
    """NextAuth's signIn("credentials", {redirect: false}) posts json=true and reads {url}."""
    t = await signup()
    token, cookie = await csrf(client)
    resp = await form_login(client, t.email, PASSWORD, token, cookie, callbackUrl="/calls", json="true", redirect="false")
    assert resp.status == 200
    assert await resp.json() == {"url": f"{PUBLIC_BASE_URL}/calls"}
    assert (await whoami(client, resp.cookies[COOKIE].value))["user"]["id"] == t.user_id
    resp = await form_login(client, t.email, PASSWORD, token, cookie, callbackUrl="https://evil.example/", json="true")
    assert await resp.json() == {"url": f"{PUBLIC_BASE_URL}/dashboard"}


async def test_form_login_failure_is_the_same_for_wrong_password_and_unknown_email(client, db, signup):
    t = await signup()
    token, cookie = await csrf(client)
    wrong = await form_login(client, t.email, "nope nope", token, cookie)
    unknown = await form_login(client, "ghost@example.com", "nope nope", token, cookie)
    assert wrong.status == unknown.status == 302
    assert wrong.headers["Location"] == unknown.headers["Location"] == f"{PUBLIC_BASE_URL}/login?error=CredentialsSignin"
    assert COOKIE not in wrong.cookies and COOKIE not in unknown.cookies
    wrong = await form_login(client, t.email, "nope nope", token, cookie, json="true")
    unknown = await form_login(client, "ghost@example.com", "nope nope", token, cookie, json="true")
    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json() == {
        "url": f"{PUBLIC_BASE_URL}/login?error=CredentialsSignin", "error": "CredentialsSignin"}


@pytest.mark.parametrize("case", ["wrong token", "no cookie", "no token", "cookie of another browser", "empty both"])
async def test_form_login_with_bad_csrf_is_403(client, db, signup, case):
    t = await signup()
    token, cookie = await csrf(client)
    other_token, other_cookie = await csrf(client)
    fields = {"email": t.email, "password": PASSWORD, "csrfToken": token}
    headers = {**FORM, "Cookie": f"{CSRF_COOKIE}={cookie}"}
    if case == "wrong token":
        fields["csrfToken"] = "x" * 43
    elif case == "no cookie":
        headers.pop("Cookie")
    elif case == "no token":
        fields.pop("csrfToken")
    elif case == "cookie of another browser":
        headers["Cookie"] = f"{CSRF_COOKIE}={other_cookie}"
    else:
        fields["csrfToken"] = ""
        headers["Cookie"] = f"{CSRF_COOKIE}="
    resp = await client.post(LOGIN, data=urlencode(fields), headers=headers, allow_redirects=False)
    assert resp.status == 403
    assert_error(await resp.json(), "csrf_mismatch")
    assert COOKIE not in resp.cookies
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1  # only signup()'s


# ---- session -------------------------------------------------------------------------------------


async def test_session_shape_and_values(client, db, signup):
    t = await signup()
    body = await whoami(client, t.token)
    assert set(body) == {"user", "expires"}
    user = body["user"]
    assert {k: user[k] for k in ("id", "name", "email", "organizationId", "role")} == {
        "id": t.user_id, "name": "Owner", "email": t.email, "organizationId": t.org_id, "role": "OWNER"}
    assert user["mustChangePassword"] is False
    expires = await db.fetchval("SELECT expires_at FROM sessions WHERE token_hash = $1", security.token_hash(t.token))
    assert datetime.fromisoformat(body["expires"]) == expires


@pytest.mark.parametrize("cookie", [None, "garbage", "", "x" * 500, security.new_token()])
async def test_session_without_a_valid_cookie_is_empty(client, db, signup, cookie):
    await signup()
    headers = None if cookie is None else {"Cookie": f"{COOKIE}={cookie}"}
    resp = await client.get("/api/auth/session", headers=headers)
    assert resp.status == 200
    assert await resp.json() == {}


async def test_expired_session_is_empty_and_refused(client, db, signup):
    t = await signup()
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    assert await whoami(client, t.token) == {}
    resp = await client.put("/api/auth/password", json={"currentPassword": PASSWORD, "newPassword": "brand new pass"},
                            headers=auth(t.token))
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")


async def test_sessions_are_per_tenant(client, db, signup):
    a, b = await signup(), await signup(org_name="Other Clinic")
    assert (await whoami(client, a.token))["user"]["organizationId"] == a.org_id
    assert (await whoami(client, b.token))["user"]["organizationId"] == b.org_id
    # Signing one out leaves the other organization's session alone.
    assert (await client.post("/api/auth/signout", json={}, headers=auth(a.token))).status == 200
    assert await whoami(client, a.token) == {}
    assert (await whoami(client, b.token))["user"]["id"] == b.user_id


# ---- server-side sessions ------------------------------------------------------------------------


async def test_only_a_hash_of_the_session_token_is_stored(client, db, signup):
    t = await signup()
    token = await login(client, t.email)
    rows = await db.fetch("SELECT * FROM sessions")
    assert len(rows) == 2
    stored = {bytes(r["token_hash"]) for r in rows}
    assert hashlib.sha256(token.encode()).digest() in stored
    for row in rows:
        for value in row.values():
            assert token not in str(value)
            assert value != token.encode()
    # And nowhere else in the database as text either.
    dump = await db.fetchval("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM sessions) t")
    assert token not in dump and t.token not in dump


async def test_every_login_issues_a_fresh_token_and_both_stay_valid(client, db, signup):
    t = await signup()
    first, second = await login(client, t.email), await login(client, t.email)
    assert len({first, second, t.token}) == 3
    for token in (first, second, t.token):
        assert (await whoami(client, token))["user"]["id"] == t.user_id
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", uuid.UUID(t.user_id)) == 3


async def test_login_with_an_existing_cookie_still_gets_a_new_token(client, db, signup):
    """No session fixation: a token planted in the browser beforehand is never adopted."""
    t = await signup()
    planted = security.new_token()
    resp = await client.post(LOGIN, json={"email": t.email, "password": PASSWORD}, headers=auth(planted))
    assert resp.status == 200
    assert resp.cookies[COOKIE].value not in (planted, t.token)
    assert await whoami(client, planted) == {}


# ---- sign-out ------------------------------------------------------------------------------------


async def test_signout_ends_the_session_server_side_despite_the_cache(client, db, signup):
    t = await signup()
    services = await listening(client)
    digest = security.token_hash(t.token)
    assert (await whoami(client, t.token))["user"]["id"] == t.user_id
    assert services.session_cache.get(digest) is not None  # the process now answers from its cache

    resp = await client.post("/api/auth/signout", json={}, headers=auth(t.token))
    assert resp.status == 200
    assert await resp.json() == {"url": f"{PUBLIC_BASE_URL}/"}
    cleared = resp.cookies[COOKIE]
    assert cleared.value == ""
    assert cleared["max-age"] == "0" or "1970" in cleared["expires"]
    assert cleared["path"] == "/"
    assert await db.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1", digest) == 0

    assert await whoami(client, t.token) == {}
    resp = await client.put("/api/auth/password", json={"currentPassword": PASSWORD, "newPassword": "brand new pass"},
                            headers=auth(t.token))
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")


async def test_signout_in_one_process_ends_the_session_in_another(make_jarless, db, signup):
    """Two gateway processes (two apps) share Postgres; the other one's cache is evicted by NOTIFY."""
    t = await signup()
    one, two = await make_jarless(), await make_jarless()
    await listening(one)
    services_two = await listening(two)
    assert (await whoami(two, t.token))["user"]["id"] == t.user_id
    assert services_two.session_cache.get(security.token_hash(t.token)) is not None
    assert (await one.post("/api/auth/signout", json={}, headers=auth(t.token))).status == 200
    for _ in range(200):  # NOTIFY is asynchronous: allow it a moment to arrive
        if services_two.session_cache.get(security.token_hash(t.token)) is None:
            break
        await asyncio.sleep(0.01)
    assert await whoami(two, t.token) == {}


async def test_form_signout_checks_csrf_and_redirects(client, db, signup):
    t = await signup()
    token, cookie = await csrf(client)
    headers = {**FORM, "Cookie": f"{COOKIE}={t.token}; {CSRF_COOKIE}={cookie}"}
    bad = await client.post("/api/auth/signout", data=urlencode({"csrfToken": "forged-" * 6}), headers=headers,
                            allow_redirects=False)
    assert bad.status == 403
    assert_error(await bad.json(), "csrf_mismatch")
    assert (await whoami(client, t.token))["user"]["id"] == t.user_id  # still signed in

    resp = await client.post("/api/auth/signout", data=urlencode({"csrfToken": token, "callbackUrl": "https://evil.example/"}),
                             headers=headers, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == f"{PUBLIC_BASE_URL}/"
    assert resp.cookies[COOKIE].value == ""
    assert await whoami(client, t.token) == {}


async def test_form_signout_with_json_true_returns_url(client, db, signup):
    """NextAuth's signOut() posts {csrfToken, callbackUrl, json: true} and reads {url}."""
    t = await signup()
    token, cookie = await csrf(client)
    resp = await client.post("/api/auth/signout", data=urlencode({"csrfToken": token, "callbackUrl": "/goodbye", "json": "true"}),
                             headers={**FORM, "Cookie": f"{COOKIE}={t.token}; {CSRF_COOKIE}={cookie}"})
    assert resp.status == 200
    assert await resp.json() == {"url": f"{PUBLIC_BASE_URL}/goodbye"}
    assert await whoami(client, t.token) == {}


async def test_signout_without_a_session_is_harmless(client, db, signup):
    t = await signup()
    for headers in (None, auth("garbage"), auth(security.new_token())):
        resp = await client.post("/api/auth/signout", json={}, headers=headers)
        assert resp.status == 200
        assert resp.cookies[COOKIE].value == ""
    assert (await whoami(client, t.token))["user"]["id"] == t.user_id


# ---- throttling ----------------------------------------------------------------------------------


def assert_throttled(resp, body):
    assert resp.status == 429
    assert_error(body, "rate_limited")
    retry_after = int(resp.headers["Retry-After"])
    assert 0 < retry_after <= 900
    assert body["retryAfter"] == retry_after


async def test_login_is_throttled_per_account_whatever_the_case(client, db, signup):
    t = await signup()  # its sign-in is attempt 1 of 10
    local, domain = t.email.split("@")
    variants = [t.email.upper(), f"{local.upper()}@{domain}", t.email.title(), f"  {t.email}  "]
    for i in range(9):
        resp = await client.post(LOGIN, json={"email": variants[i % len(variants)], "password": f"guess {i}"})
        assert resp.status == 401
    # Limit reached: even the right password waits now, and says how long.
    resp = await client.post(LOGIN, json={"email": t.email.upper(), "password": PASSWORD})
    assert_throttled(resp, await resp.json())
    assert COOKIE not in resp.cookies
    # Another account from the same address is not affected (the per-IP limit is higher).
    other = await signup()
    assert (await client.post(LOGIN, json={"email": other.email, "password": PASSWORD})).status == 200


async def test_login_throttle_counts_the_form_post_too(client, db, signup):
    t = await signup()
    token, cookie = await csrf(client)
    for i in range(9):
        assert (await form_login(client, t.email.upper(), f"guess {i}", token, cookie)).status == 302
    resp = await form_login(client, t.email, PASSWORD, token, cookie)
    assert_throttled(resp, await resp.json())


async def test_login_throttle_per_account_covers_full_width_spellings(client, db):
    assert (await client.post("/api/auth/register", json={
        "name": "A", "email": "alice@example.com", "password": PASSWORD, "organizationName": "A"})).status == 201
    for i in range(10):
        email = "alice@example.com" if i % 2 else "ａｌｉｃｅ@example.com"
        assert (await client.post(LOGIN, json={"email": email, "password": f"guess {i}"})).status == 401
    resp = await client.post(LOGIN, json={"email": "ａｌｉｃｅ@example.com", "password": PASSWORD})
    assert resp.status == 429


async def test_login_is_throttled_per_ip(client, db):
    for i in range(30):
        resp = await client.post(LOGIN, json={"email": f"user{i}@example.com", "password": "whatever pass"})
        assert resp.status == 401, i
    resp = await client.post(LOGIN, json={"email": "fresh@example.com", "password": "whatever pass"})
    assert_throttled(resp, await resp.json())
    # Only counters are stored, keyed by a hash: no email in the rate table.
    keys = " ".join(r["key"] for r in await db.fetch("SELECT key FROM rate_counters"))
    assert "example.com" not in keys
