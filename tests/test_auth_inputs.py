"""Bad input on every accounts/sessions route: 400 in the one error shape with details, never a
500, never a partial write, and never the password (or token) sent back."""
from __future__ import annotations

import uuid

import pytest

from gateway import security
from tests.conftest import assert_error

SECRET = "Hunter2-Secret-XYZ"  # a password; must never appear in a reply
COOKIE = "next-auth.session-token"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def client(make_jarless):
    return await make_jarless()


def account(**changes):
    body = {"name": "Ada", "email": "ada@example.com", "password": SECRET, "organizationName": "Acme"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def raw(text: str, headers=JSON):
    return {"data": text.encode(), "headers": headers}


# (method, path, request kwargs, the detail path expected first, or None when any path will do)
CASES = {
    # register
    "register: malformed JSON": ("POST", "/api/auth/register", raw('{"email": "a@b.c", "password": "' + SECRET + '"'), ""),
    "register: trailing garbage": ("POST", "/api/auth/register", raw('{"password": "' + SECRET + '"} x'), ""),
    "register: empty JSON body": ("POST", "/api/auth/register", raw(""), None),
    "register: not an object": ("POST", "/api/auth/register", {"json": [SECRET]}, ""),
    "register: missing name": ("POST", "/api/auth/register", {"json": account(name=...)}, "name"),
    "register: missing email": ("POST", "/api/auth/register", {"json": account(email=...)}, "email"),
    "register: missing password": ("POST", "/api/auth/register", {"json": account(password=...)}, "password"),
    "register: missing organizationName": ("POST", "/api/auth/register", {"json": account(organizationName=...)}, "organizationName"),
    "register: name not a string": ("POST", "/api/auth/register", {"json": account(name=5)}, "name"),
    "register: email not a string": ("POST", "/api/auth/register", {"json": account(email=["a@b.c"])}, "email"),
    "register: password a number": ("POST", "/api/auth/register", {"json": account(password=123456789)}, "password"),
    "register: password an object": ("POST", "/api/auth/register", {"json": account(password={"v": SECRET})}, "password"),
    "register: organizationName null": ("POST", "/api/auth/register", {"json": account(organizationName=None)}, "organizationName"),
    "register: email not an email": ("POST", "/api/auth/register", {"json": account(email="not-an-email")}, "email"),
    "register: unknown field": ("POST", "/api/auth/register", {"json": account(plan="PRO")}, ""),
    "register: role smuggled in": ("POST", "/api/auth/register", {"json": account(role="ADMIN", organizationId=str(uuid.uuid4()))}, ""),
    "register: NUL in a string": ("POST", "/api/auth/register", {"json": account(name="A\x00B")}, "name"),
    "register: CR/LF in name": ("POST", "/api/auth/register", {"json": account(name="Ada\r\nBcc: victim@example.com")}, "name"),
    "register: tab in organizationName": ("POST", "/api/auth/register", {"json": account(organizationName="Acme\tDental")}, "organizationName"),
    "register: control char in email": ("POST", "/api/auth/register", {"json": account(email="ada\x01@example.com")}, "email"),
    "register: form body": ("POST", "/api/auth/register", {"data": f"password={SECRET}".encode(), "headers": FORM}, None),
    # forgot-password
    "forgot: malformed JSON": ("POST", "/api/auth/forgot-password", raw('{"email": '), ""),
    "forgot: missing email": ("POST", "/api/auth/forgot-password", {"json": {}}, "email"),
    "forgot: email a number": ("POST", "/api/auth/forgot-password", {"json": {"email": 42}}, "email"),
    "forgot: email not an email": ("POST", "/api/auth/forgot-password", {"json": {"email": "nobody"}}, "email"),
    "forgot: unknown field": ("POST", "/api/auth/forgot-password", {"json": {"email": "a@b.c", "password": SECRET}}, ""),
    # reset-password
    "reset: malformed JSON": ("POST", "/api/auth/reset-password", raw('{"token": "abcdefghijkl", "password": "' + SECRET), ""),
    "reset: missing token": ("POST", "/api/auth/reset-password", {"json": {"password": SECRET}}, "token"),
    "reset: missing password": ("POST", "/api/auth/reset-password", {"json": {"token": "abcdefghijkl"}}, "password"),
    "reset: token too short": ("POST", "/api/auth/reset-password", {"json": {"token": "abc", "password": SECRET}}, "token"),
    "reset: token a number": ("POST", "/api/auth/reset-password", {"json": {"token": 1234567890123, "password": SECRET}}, "token"),
    "reset: password a list": ("POST", "/api/auth/reset-password", {"json": {"token": "abcdefghijkl", "password": [SECRET]}}, "password"),
    "reset: password too short": ("POST", "/api/auth/reset-password", {"json": {"token": "abcdefghijkl", "password": "Hu2-XYZ"}}, "password"),
    "reset: unknown field": ("POST", "/api/auth/reset-password", {"json": {"token": "abcdefghijkl", "password": SECRET, "email": "a@b.c"}}, ""),
    # change password (signed in)
    "password: malformed JSON": ("PUT", "/api/auth/password", raw('{"newPassword": "' + SECRET + '",}'), ""),
    "password: missing newPassword": ("PUT", "/api/auth/password", {"json": {"currentPassword": SECRET}}, "newPassword"),
    "password: newPassword a number": ("PUT", "/api/auth/password", {"json": {"currentPassword": SECRET, "newPassword": 12345678}}, "newPassword"),
    "password: newPassword too short": ("PUT", "/api/auth/password", {"json": {"currentPassword": SECRET, "newPassword": "Hu2-XYZ"}}, "newPassword"),
    "password: currentPassword a number": ("PUT", "/api/auth/password", {"json": {"currentPassword": 5, "newPassword": SECRET}}, "currentPassword"),
    "password: forced a string": ("PUT", "/api/auth/password", {"json": {"newPassword": SECRET, "forced": "true"}}, "forced"),
    "password: unknown field": ("PUT", "/api/auth/password", {"json": {"currentPassword": SECRET, "newPassword": SECRET, "userId": str(uuid.uuid4())}}, ""),
    "password: not an object": ("PUT", "/api/auth/password", {"json": SECRET}, ""),
    # credentials sign-in
    "login: malformed JSON": ("POST", "/api/auth/callback/credentials", raw('{"email": "a@b.c", "password": "' + SECRET), ""),
    "login: missing password": ("POST", "/api/auth/callback/credentials", {"json": {"email": "a@b.c"}}, "password"),
    "login: missing email": ("POST", "/api/auth/callback/credentials", {"json": {"password": SECRET}}, "email"),
    "login: email a number": ("POST", "/api/auth/callback/credentials", {"json": {"email": 1234, "password": SECRET}}, "email"),
    "login: password null": ("POST", "/api/auth/callback/credentials", {"json": {"email": "a@b.c", "password": None}}, "password"),
    "login: unknown field": ("POST", "/api/auth/callback/credentials", {"json": {"email": "a@b.c", "password": SECRET, "remember": True}}, ""),
    "login: form missing password": ("POST", "/api/auth/callback/credentials", raw("email=a%40b.c&csrfToken=x", FORM), "password"),
    "login: form field twice": ("POST", "/api/auth/callback/credentials", raw(f"email=a%40b.c&password={SECRET}&password=x", FORM), "password"),
    "login: form malformed": ("POST", "/api/auth/callback/credentials", raw(f"email=a%40b.c&{SECRET}", FORM), ""),
    "login: form unknown field": ("POST", "/api/auth/callback/credentials", raw(f"email=a%40b.c&password={SECRET}&isAdmin=1", FORM), ""),
    # sign-out
    "signout: malformed JSON": ("POST", "/api/auth/signout", raw("{"), ""),
    "signout: callbackUrl a number": ("POST", "/api/auth/signout", {"json": {"callbackUrl": 5}}, "callbackUrl"),
    "signout: unknown field": ("POST", "/api/auth/signout", {"json": {"everywhere": True}}, ""),
    "signout: not an object": ("POST", "/api/auth/signout", {"json": [1, 2]}, ""),
    # GET routes: their query strings
    "csrf: unknown parameter": ("GET", "/api/auth/csrf?callbackUrl=x", {}, ""),
    "session: unknown parameter": ("GET", "/api/auth/session?userId=1", {}, ""),
    "magic-link: missing token": ("GET", "/api/auth/magic-link", {}, "token"),
    "magic-link: empty token": ("GET", "/api/auth/magic-link?token=", {}, "token"),
    "magic-link: token too short": ("GET", "/api/auth/magic-link?token=abc", {}, "token"),
    "magic-link: token twice": ("GET", "/api/auth/magic-link?token=abcdefghijkl&token=mnopqrstuvwx", {}, "token"),
}


async def snapshot(db) -> dict:
    out = {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("organizations", "users", "sessions", "auth_tokens", "outbox")}
    out["hashes"] = sorted(r["password_hash"] for r in await db.fetch("SELECT password_hash FROM users"))
    out["used"] = await db.fetchval("SELECT count(*) FROM auth_tokens WHERE used_at IS NOT NULL")
    return out


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_a_400_in_the_error_shape(client, db, signup, case):
    method, path, kwargs, first_path = CASES[case]
    t = await signup(password=SECRET)
    headers = {**kwargs.get("headers", {}), "Cookie": f"{COOKIE}={t.token}"}
    before = await snapshot(db)
    resp = await client.request(method, path, **{**kwargs, "headers": headers}, allow_redirects=False)
    text = await resp.text()
    expected_status = 415 if case == "register: form body" else 400
    assert resp.status == expected_status, text
    body = await resp.json()
    assert_error(body, "invalid_request" if expected_status == 400 else "unsupported_media_type")
    if expected_status == 400:
        details = body["details"]
        assert isinstance(details, list) and details
        for detail in details:
            assert set(detail) == {"path", "message"}
            assert isinstance(detail["path"], str) and isinstance(detail["message"], str) and detail["message"]
        if first_path is not None:
            assert details[0]["path"] == first_path, details
    assert SECRET not in text
    assert "Traceback" not in text and "asyncpg" not in text
    assert await snapshot(db) == before


async def test_unknown_fields_are_named_in_the_details(client, db):
    resp = await client.post("/api/auth/register", json=account(plan="PRO", role="ADMIN"))
    body = await resp.json()
    assert resp.status == 400
    assert body["details"] == [{"path": "", "message": "unknown field(s): plan, role"}]


async def test_every_missing_field_is_reported_at_once(client, db):
    resp = await client.post("/api/auth/register", json={})
    body = await resp.json()
    assert resp.status == 400
    assert sorted(d["path"] for d in body["details"]) == ["email", "name", "organizationName", "password"]
    assert all(d["message"] == "is required" for d in body["details"])


async def test_wrong_content_type_is_415(client, db):
    for path in ("/api/auth/callback/credentials", "/api/auth/forgot-password", "/api/auth/reset-password"):
        resp = await client.post(path, data=f"email=a@b.c&password={SECRET}", headers={"Content-Type": "text/plain"})
        assert resp.status == 415
        assert_error(await resp.json(), "unsupported_media_type")
        assert SECRET not in await resp.text()


async def test_oversized_body_is_413(client, db):
    resp = await client.post("/api/auth/register", json=account(name="x" * 9000))
    assert resp.status == 413
    assert_error(await resp.json(), "payload_too_large")
    assert await db.fetchval("SELECT count(*) FROM organizations") == 0


async def test_a_bad_query_does_not_burn_a_magic_link(client, db, signup):
    t = await signup()
    token = security.new_token()
    await db.execute(
        "INSERT INTO auth_tokens (token_hash, kind, user_id, organization_id, expires_at) "
        "VALUES ($1, 'magic_link', $2, $3, now() + interval '15 minutes')",
        security.token_hash(token), uuid.UUID(t.user_id), uuid.UUID(t.org_id),
    )
    resp = await client.get(f"/api/auth/magic-link?token={token}&token={token}", allow_redirects=False)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    assert token not in await resp.text()
    assert await db.fetchval("SELECT used_at FROM auth_tokens") is None
    # Tracking parameters that mail providers append are ignored, and cannot steer the redirect.
    resp = await client.get("/api/auth/magic-link", params={"token": token, "utm_source": "mail",
                                                           "next": "https://evil.example"}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "http://gateway.test/dashboard"
