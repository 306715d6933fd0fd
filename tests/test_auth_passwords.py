"""Forgotten, reset and changed passwords: no account enumeration, hashed single-use expiring
tokens, links built from PUBLIC_BASE_URL only, and which sessions each change ends."""
from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from datetime import timedelta

import pytest

from gateway import security
from gateway.handlers import auth as auth_handlers
from tests.conftest import PASSWORD, PUBLIC_BASE_URL, assert_error, listening

COOKIE = "next-auth.session-token"
LOGIN = "/api/auth/callback/credentials"
NEW_PASSWORD = "a brand new passphrase"
_LINK = re.compile(r"(\S+/reset-password\?token=)(\S+)")
FLOOR = auth_handlers.FORGOT_PASSWORD_FLOOR_SECONDS


@pytest.fixture(autouse=True)
def no_forgot_password_floor(monkeypatch):
    """Forgot-password pads every reply to a fixed duration; only the timing test needs that."""
    monkeypatch.setattr(auth_handlers, "FORGOT_PASSWORD_FLOOR_SECONDS", 0.0)


@pytest.fixture
async def client(make_jarless):
    return await make_jarless()


def auth(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={token}"}


async def login(client, email: str, password: str = PASSWORD) -> str:
    resp = await client.post(LOGIN, json={"email": email, "password": password})
    assert resp.status == 200, await resp.text()
    return resp.cookies[COOKIE].value


async def login_status(client, email: str, password: str) -> int:
    return (await client.post(LOGIN, json={"email": email, "password": password})).status


async def signed_in(client, token: str) -> bool:
    """Asked twice: the second answer comes from the process cache when the first filled it."""
    answers = [await (await client.get("/api/auth/session", headers=auth(token))).json() for _ in range(2)]
    assert answers[0] == answers[1]
    return answers[0] != {}


async def forgot(client, email: str, headers: dict | None = None):
    return await client.post("/api/auth/forgot-password", json={"email": email}, headers=headers)


async def reset_link(db, to: str | None = None) -> tuple[str, str]:
    """(link prefix, token) of the newest reset mail."""
    row = await db.fetchrow(
        "SELECT to_address, body_text FROM outbox WHERE kind = 'password_reset' ORDER BY id DESC LIMIT 1")
    assert row is not None, "no reset mail in the outbox"
    if to is not None:
        assert row["to_address"] == to
    prefix, token = _LINK.search(row["body_text"]).groups()
    return prefix, token


async def reset(client, token: str, password: str = NEW_PASSWORD):
    return await client.post("/api/auth/reset-password", json={"token": token, "password": password})


# ---- forgot-password -----------------------------------------------------------------------------


async def test_forgot_password_reply_is_identical_with_or_without_an_account(client, db, signup, monkeypatch):
    monkeypatch.setattr(auth_handlers, "FORGOT_PASSWORD_FLOOR_SECONDS", FLOOR)
    t = await signup()
    await client.get("/api/auth/csrf")  # warm the connection up before timing
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    replies = {}
    for i in range(3):
        for kind, email in (("known", t.email), ("unknown", f"ghost{i}@example.com")):
            started = time.perf_counter()
            resp = await forgot(client, email)
            body = await resp.read()
            timings[kind].append(time.perf_counter() - started)
            replies.setdefault(kind, set()).add((resp.status, body, resp.headers["Content-Type"]))
    assert replies["known"] == replies["unknown"]
    ((status, body, _),) = replies["known"]
    assert status == 200
    assert body == b'{"message":"If an account exists for that email, a reset link is on its way"}'
    # A behaviour check (no timing oracle), not a speed assertion.
    known, unknown = statistics.median(timings["known"]), statistics.median(timings["unknown"])
    assert abs(known - unknown) < 0.150, timings
    # Only the real account got mail and a token.
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE kind = 'password_reset'") == 3
    assert await db.fetchval("SELECT count(DISTINCT user_id) FROM auth_tokens") == 1


async def test_reset_mail_uses_public_base_url_whatever_the_host_header(client, db, signup):
    t = await signup()
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
              "Forwarded": "host=evil.example;proto=https", "Origin": "https://evil.example"}
    resp = await forgot(client, t.email, headers=forged)
    assert resp.status == 200
    mail = await db.fetchrow("SELECT * FROM outbox WHERE kind = 'password_reset'")
    assert mail["to_address"] == t.email
    assert mail["organization_id"] == uuid.UUID(t.org_id)
    prefix, token = await reset_link(db)
    assert prefix == f"{PUBLIC_BASE_URL}/reset-password?token="
    assert "evil.example" not in mail["body_text"]
    assert (await reset(client, token)).status == 200


async def test_reset_mail_goes_to_the_stored_address_not_the_typed_one(client, db):
    assert (await client.post("/api/auth/register", json={
        "name": "Åsa", "email": "åsa@example.com", "password": PASSWORD, "organizationName": "Å AB"})).status == 201
    for typed in ("ÅSA@EXAMPLE.COM", "A\u030aSA@example.com", "åsa@ｅｘａｍｐｌｅ.com"):
        assert (await forgot(client, typed)).status == 200
    rows = await db.fetch("SELECT to_address FROM outbox WHERE kind = 'password_reset'")
    assert [r["to_address"] for r in rows] == ["åsa@example.com"] * 3


async def test_reset_token_is_random_hashed_and_lasts_one_hour(client, db, signup):
    t = await signup()
    await forgot(client, t.email)
    _, first = await reset_link(db)
    await forgot(client, t.email)
    _, second = await reset_link(db)
    assert first != second and len(first) >= 43  # 256 random bits, url-safe
    rows = await db.fetch("SELECT * FROM auth_tokens ORDER BY created_at")
    assert len(rows) == 2
    assert {bytes(r["token_hash"]) for r in rows} == {security.token_hash(first), security.token_hash(second)}
    dump = await db.fetchval("SELECT string_agg(a::text, ' ') FROM auth_tokens a")
    assert first not in dump and second not in dump
    for row in rows:
        assert row["kind"] == "password_reset"
        assert row["user_id"] == uuid.UUID(t.user_id) and row["organization_id"] == uuid.UUID(t.org_id)
        assert row["used_at"] is None
        assert row["expires_at"] - row["created_at"] == timedelta(hours=1)


async def test_forgot_password_for_unknown_email_writes_nothing(client, db, signup):
    await signup()
    before = await db.fetchval("SELECT count(*) FROM outbox")
    assert (await forgot(client, "nobody@example.com")).status == 200
    assert await db.fetchval("SELECT count(*) FROM outbox") == before
    assert await db.fetchval("SELECT count(*) FROM auth_tokens") == 0


async def test_forgot_password_is_throttled_per_account(client, db, signup):
    t = await signup()
    for email in (t.email, t.email.upper(), t.email, t.email.upper(), t.email):
        assert (await forgot(client, email)).status == 200
    resp = await forgot(client, t.email.upper())
    assert resp.status == 429
    assert_error(await resp.json(), "rate_limited")
    assert int(resp.headers["Retry-After"]) > 0
    assert await db.fetchval("SELECT count(*) FROM auth_tokens") == 5


# ---- reset-password ------------------------------------------------------------------------------


async def test_reset_sets_the_password_and_ends_every_session(client, db, signup):
    t = await signup()
    await listening(client)
    other = await login(client, t.email)
    assert await signed_in(client, t.token) and await signed_in(client, other)  # both cached now
    await db.execute("UPDATE users SET must_change_password = true")

    await forgot(client, t.email)
    _, token = await reset_link(db, to=t.email)
    resp = await reset(client, token)
    assert resp.status == 200
    assert set(await resp.json()) == {"message"}

    assert not await signed_in(client, t.token)
    assert not await signed_in(client, other)
    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    user = await db.fetchrow("SELECT password_hash, must_change_password FROM users")
    assert user["password_hash"].startswith("$argon2id$") and NEW_PASSWORD not in user["password_hash"]
    assert user["must_change_password"] is False
    assert await login_status(client, t.email, PASSWORD) == 401
    assert await login_status(client, t.email, NEW_PASSWORD) == 200


async def test_reset_token_is_single_use(client, db, signup):
    t = await signup()
    await forgot(client, t.email)
    _, token = await reset_link(db)
    assert (await reset(client, token)).status == 200
    resp = await reset(client, token, "yet another password")
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_token")
    assert await login_status(client, t.email, NEW_PASSWORD) == 200
    assert await login_status(client, t.email, "yet another password") == 401


async def test_concurrent_redemptions_of_one_token_succeed_once(client, db, signup):
    t = await signup()
    await forgot(client, t.email)
    _, token = await reset_link(db)
    replies = await asyncio.gather(*(reset(client, token, f"racing password {i}") for i in range(4)))
    assert sorted(r.status for r in replies) == [200, 400, 400, 400]


async def test_a_reset_retires_older_reset_links(client, db, signup):
    t = await signup()
    await forgot(client, t.email)
    _, older = await reset_link(db)
    await forgot(client, t.email)
    _, newer = await reset_link(db)
    assert (await reset(client, newer)).status == 200
    resp = await reset(client, older, "sneaky other password")
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_token")


@pytest.mark.parametrize(
    ("age", "expires_in", "status"),
    [
        ("59 minutes", "1 minute", 200),  # just inside the hour
        ("61 minutes", "-1 minute", 400),  # past the hour
        ("2 hours", "1 hour", 400),  # created long ago: the 1-hour life counts from creation too
        ("0 minutes", "-1 second", 400),  # expires_at passed
    ],
)
async def test_reset_token_expires_after_one_hour(client, db, signup, age, expires_in, status):
    t = await signup()
    await forgot(client, t.email)
    _, token = await reset_link(db)
    await db.execute(
        "UPDATE auth_tokens SET created_at = now() - $1::text::interval, expires_at = now() + $2::text::interval",
        age, expires_in,
    )
    resp = await reset(client, token)
    assert resp.status == status
    if status == 400:
        assert_error(await resp.json(), "invalid_token")
        assert await db.fetchval("SELECT count(*) FROM sessions") == 1  # signup()'s, not ended
        assert await login_status(client, t.email, PASSWORD) == 200  # password unchanged


async def test_unknown_or_wrong_kind_token_is_refused(client, db, signup):
    t = await signup()
    magic = security.new_token()
    await db.execute(
        "INSERT INTO auth_tokens (token_hash, kind, user_id, organization_id, expires_at) "
        "VALUES ($1, 'magic_link', $2, $3, now() + interval '15 minutes')",
        security.token_hash(magic), uuid.UUID(t.user_id), uuid.UUID(t.org_id),
    )
    for token in (security.new_token(), magic, "0123456789"):
        resp = await reset(client, token)
        assert resp.status == 400
        assert_error(await resp.json(), "invalid_token")
    assert await login_status(client, t.email, PASSWORD) == 200
    assert await db.fetchval("SELECT used_at FROM auth_tokens") is None  # the magic link is untouched


async def test_reset_with_a_too_short_password_keeps_the_token(client, db, signup):
    t = await signup()
    await forgot(client, t.email)
    _, token = await reset_link(db)
    resp = await reset(client, token, "short")
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"] == [{"path": "password", "message": "must be at least 8 characters"}]
    assert token not in await resp.text()
    assert await db.fetchval("SELECT used_at FROM auth_tokens") is None
    assert (await reset(client, token)).status == 200


async def test_reset_touches_only_its_own_user(client, db, signup):
    a, b = await signup(), await signup(org_name="Other Clinic")
    await forgot(client, a.email)
    _, token = await reset_link(db, to=a.email)
    assert (await reset(client, token)).status == 200
    assert not await signed_in(client, a.token)
    assert await signed_in(client, b.token)
    assert await login_status(client, b.email, PASSWORD) == 200


# ---- change password -----------------------------------------------------------------------------


async def change(client, token: str | None, **body):
    return await client.put("/api/auth/password", json=body, headers=auth(token) if token else None)


async def test_change_password_keeps_this_session_and_ends_the_others(client, db, signup):
    t = await signup()
    await listening(client)
    other = await login(client, t.email)
    assert await signed_in(client, t.token) and await signed_in(client, other)  # both cached

    resp = await change(client, t.token, currentPassword=PASSWORD, newPassword=NEW_PASSWORD)
    assert resp.status == 200
    assert await resp.json() == {"success": True}
    assert await signed_in(client, t.token)
    assert not await signed_in(client, other)
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1
    assert await login_status(client, t.email, PASSWORD) == 401
    assert await login_status(client, t.email, NEW_PASSWORD) == 200


async def test_change_password_retires_pending_reset_links(client, db, signup):
    t = await signup()
    await forgot(client, t.email)
    _, token = await reset_link(db)
    assert (await change(client, t.token, currentPassword=PASSWORD, newPassword=NEW_PASSWORD)).status == 200
    assert (await reset(client, token, "attacker's choice")).status == 400
    assert await login_status(client, t.email, NEW_PASSWORD) == 200


async def test_wrong_current_password_is_400_and_changes_nothing(client, db, signup):
    t = await signup()
    other = await login(client, t.email)
    before = await db.fetchval("SELECT password_hash FROM users")
    resp = await change(client, t.token, currentPassword="not my password", newPassword=NEW_PASSWORD)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_current_password")
    assert "not my password" not in await resp.text() and NEW_PASSWORD not in await resp.text()
    assert await db.fetchval("SELECT password_hash FROM users") == before
    assert await signed_in(client, other)


async def test_current_password_is_required(client, db, signup):
    t = await signup()
    resp = await change(client, t.token, newPassword=NEW_PASSWORD)
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"] == [{"path": "currentPassword", "message": "is required"}]
    assert await login_status(client, t.email, PASSWORD) == 200


async def test_forced_change_needs_no_current_password_when_flagged(client, db, signup):
    t = await signup()
    await db.execute("UPDATE users SET must_change_password = true")
    await listening(client)
    session = await (await client.get("/api/auth/session", headers=auth(t.token))).json()
    assert session["user"]["mustChangePassword"] is True  # cached with the flag

    resp = await change(client, t.token, newPassword=NEW_PASSWORD, forced=True)
    assert resp.status == 200
    assert await resp.json() == {"success": True}
    assert await db.fetchval("SELECT must_change_password FROM users") is False
    session = await (await client.get("/api/auth/session", headers=auth(t.token))).json()
    assert session["user"]["mustChangePassword"] is False  # the cached copy was refreshed
    assert await login_status(client, t.email, NEW_PASSWORD) == 200
    # The flag is gone, so "forced" no longer skips the check.
    resp = await change(client, t.token, newPassword="third password here", forced=True)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")


@pytest.mark.parametrize("current", [None, "wrong password"])
async def test_forced_without_the_flag_still_needs_the_current_password(client, db, signup, current):
    t = await signup()
    body = {"newPassword": NEW_PASSWORD, "forced": True}
    if current is not None:
        body["currentPassword"] = current
    resp = await change(client, t.token, **body)
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request" if current is None else "invalid_current_password")
    assert await login_status(client, t.email, PASSWORD) == 200
    resp = await change(client, t.token, currentPassword=PASSWORD, newPassword=NEW_PASSWORD, forced=True)
    assert resp.status == 200


@pytest.mark.parametrize("cookie", [None, "garbage", security.new_token()])
async def test_change_password_requires_a_session(client, db, signup, cookie):
    t = await signup()
    resp = await change(client, cookie, currentPassword=PASSWORD, newPassword=NEW_PASSWORD)
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")
    assert await login_status(client, t.email, PASSWORD) == 200


async def test_change_password_refuses_a_short_new_password_without_echo(client, db, signup):
    t = await signup()
    resp = await change(client, t.token, currentPassword=PASSWORD, newPassword="Sh0rt!")
    assert resp.status == 400
    body = await resp.json()
    assert body["details"] == [{"path": "newPassword", "message": "must be at least 8 characters"}]
    assert "Sh0rt!" not in await resp.text() and PASSWORD not in await resp.text()


async def test_change_password_touches_only_the_callers_account(client, db, signup):
    a, b = await signup(), await signup(org_name="Other Clinic")
    b_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(b.user_id))
    assert (await change(client, a.token, currentPassword=PASSWORD, newPassword=NEW_PASSWORD)).status == 200
    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", uuid.UUID(b.user_id)) == b_hash
    assert await signed_in(client, b.token)
    assert await login_status(client, b.email, PASSWORD) == 200
    # B's own current password is B's: A's new password means nothing there.
    resp = await change(client, b.token, currentPassword=NEW_PASSWORD, newPassword="whatever else")
    assert resp.status == 400


async def test_guessing_the_current_password_is_throttled(client, db, signup):
    t = await signup()
    for i in range(10):
        resp = await change(client, t.token, currentPassword=f"guess number {i}", newPassword=NEW_PASSWORD)
        assert resp.status == 400
    resp = await change(client, t.token, currentPassword=PASSWORD, newPassword=NEW_PASSWORD)
    assert resp.status == 429
    assert_error(await resp.json(), "rate_limited")
    assert int(resp.headers["Retry-After"]) > 0
    assert await login_status(client, t.email, PASSWORD) == 200
