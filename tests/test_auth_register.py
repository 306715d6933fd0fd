"""POST /api/auth/register: one transaction, normalised unique emails, Argon2, never-truncated passwords."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from gateway.store import outbox
from tests.conftest import PUBLIC_BASE_URL, assert_error

COOKIE = "next-auth.session-token"


@pytest.fixture
async def client(make_jarless):
    return await make_jarless()


def account(email="owner@example.com", password="correct horse battery staple", **extra):
    return {"name": "Ada Owner", "email": email, "password": password, "organizationName": "Acme Dental", **extra}


async def counts(db) -> dict[str, int]:
    return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in ("organizations", "users", "outbox", "sessions")}


async def login_status(client, email, password) -> int:
    resp = await client.post("/api/auth/callback/credentials", json={"email": email, "password": password})
    return resp.status


async def test_register_creates_organization_owner_and_welcome_mail(client, db):
    resp = await client.post("/api/auth/register", json=account(email="  Ada.Owner@Example.COM "))
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"message", "organizationId", "userId"}
    assert isinstance(body["message"], str) and body["message"]
    org_id, user_id = uuid.UUID(body["organizationId"]), uuid.UUID(body["userId"])

    org = await db.fetchrow("SELECT name, plan, status FROM organizations WHERE id = $1", org_id)
    assert dict(org) == {"name": "Acme Dental", "plan": None, "status": "ACTIVE"}
    user = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    assert user["organization_id"] == org_id
    assert user["email"] == "ada.owner@example.com"  # stored normalised
    assert user["name"] == "Ada Owner"
    assert user["role"] == "OWNER"
    assert user["must_change_password"] is False
    # Argon2id, never the password itself.
    assert user["password_hash"].startswith("$argon2id$")
    assert "correct horse battery staple" not in user["password_hash"]

    mails = await db.fetch("SELECT * FROM outbox")
    assert len(mails) == 1
    mail = mails[0]
    assert mail["kind"] == "welcome"
    assert mail["organization_id"] == org_id
    assert mail["to_address"] == "ada.owner@example.com"
    assert f"{PUBLIC_BASE_URL}/login" in mail["body_text"]
    assert "correct horse battery staple" not in mail["body_text"] + mail["subject"]
    assert mail["sent_at"] is None
    assert await counts(db) == {"organizations": 1, "users": 1, "outbox": 1, "sessions": 0}


async def test_registered_owner_can_sign_in_with_any_case(client, db):
    assert (await client.post("/api/auth/register", json=account(email="ÅSA@Example.com"))).status == 201
    resp = await client.post("/api/auth/callback/credentials", json={"email": "åsa@EXAMPLE.com", "password": account()["password"]})
    assert resp.status == 200
    assert (await resp.json())["user"]["email"] == "åsa@example.com"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("owner@example.com", "OWNER@EXAMPLE.COM"),
        ("ÅSA@Example.com", "åsa@example.com"),  # Unicode case
        ("åsa@example.com", "A\u030aSA@example.com"),  # decomposed Å (A + combining ring)
        ("\u212bsa@example.com", "åsa@example.com"),  # ANGSTROM SIGN folds to Å under NFKC
        ("alice@example.com", "ａｌｉｃｅ@ｅｘａｍｐｌｅ.ｃｏｍ"),  # full-width letters (NFKC)
        ("ＡＬＩＣＥ@example.com", "alice@example.com"),
        ("bob@example.com", "  bob@example.com\t"),
    ],
)
async def test_duplicate_email_after_normalisation_is_409_and_writes_nothing(client, db, first, second):
    assert (await client.post("/api/auth/register", json=account(email=first))).status == 201
    before = await counts(db)
    resp = await client.post("/api/auth/register", json=account(email=second, password="another password 123"))
    assert resp.status == 409
    assert_error(await resp.json(), "email_taken")
    # The second organization (inserted first in the transaction) was rolled back with the user.
    assert await counts(db) == before == {"organizations": 1, "users": 1, "outbox": 1, "sessions": 0}


async def test_concurrent_registrations_of_one_email_make_one_account(client, db):
    replies = await asyncio.gather(*(client.post("/api/auth/register", json=account(email=e))
                                     for e in ("race@example.com", "RACE@example.com", "Race@Example.com")))
    assert sorted(r.status for r in replies) == [201, 409, 409]
    assert await counts(db) == {"organizations": 1, "users": 1, "outbox": 1, "sessions": 0}


async def test_a_failure_mid_transaction_leaves_nothing_behind(client, db, monkeypatch):
    async def broken_outbox(*args, **kwargs):
        raise RuntimeError("mail queue exploded")

    monkeypatch.setattr(outbox, "enqueue", broken_outbox)  # fails after organization and user are inserted
    resp = await client.post("/api/auth/register", json=account())
    assert resp.status == 500
    body = await resp.json()
    assert_error(body, "internal_error")
    assert "exploded" not in str(body)
    assert await counts(db) == {"organizations": 0, "users": 0, "outbox": 0, "sessions": 0}
    monkeypatch.undo()
    # Nothing half-made blocks a retry.
    assert (await client.post("/api/auth/register", json=account())).status == 201


@pytest.mark.parametrize("password", ["", "1234567", "Pass w!"])
async def test_password_shorter_than_8_is_refused_without_echo(client, db, password):
    resp = await client.post("/api/auth/register", json=account(password=password))
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"] == [{"path": "password", "message": "must be at least 8 characters"}]
    if password:
        assert password not in await resp.text()
    assert await counts(db) == {"organizations": 0, "users": 0, "outbox": 0, "sessions": 0}


async def test_password_of_exactly_8_is_accepted(client, db):
    assert (await client.post("/api/auth/register", json=account(password="12345678"))).status == 201
    assert await login_status(client, "owner@example.com", "12345678") == 200


async def test_long_password_is_accepted_and_never_truncated(client, db):
    password = "".join(chr(ord("a") + i % 26) for i in range(300))
    resp = await client.post("/api/auth/register", json=account(password=password))
    assert resp.status == 201
    stored = await db.fetchval("SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$") and password not in stored
    assert await login_status(client, "owner@example.com", password) == 200
    # Differs only at character 200 (index 199): bcrypt-style truncation at 72 bytes would accept it.
    differs_at_200 = password[:199] + ("Z" if password[199] != "Z" else "Y") + password[200:]
    assert len(differs_at_200) == 300 and differs_at_200 != password
    assert await login_status(client, "owner@example.com", differs_at_200) == 401
    assert await login_status(client, "owner@example.com", password[:200]) == 401
    assert await login_status(client, "owner@example.com", password[:72]) == 401
    assert await login_status(client, "owner@example.com", password + "x") == 401


async def test_password_limit_is_1024_characters(client, db):
    longest = "p" * 1023 + "q"
    assert (await client.post("/api/auth/register", json=account(password=longest))).status == 201
    assert await login_status(client, "owner@example.com", longest) == 200
    assert await login_status(client, "owner@example.com", longest[:-1] + "p") == 401
    too_long = "s" * 1025
    resp = await client.post("/api/auth/register", json=account(email="other@example.com", password=too_long))
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"] == [{"path": "password", "message": "must be at most 1024 characters"}]
    assert too_long not in await resp.text()


async def test_same_password_typed_composed_or_decomposed_signs_in(client, db):
    """Passwords are NFKC-normalised before hashing (NIST SP 800-63B), so "é" typed as one code
    point or as e + combining accent is the same password; a different letter is not."""
    assert (await client.post("/api/auth/register", json=account(password="caf\u00e9 au lait"))).status == 201
    assert await login_status(client, "owner@example.com", "cafe\u0301 au lait") == 200
    assert await login_status(client, "owner@example.com", "cafe au lait") == 401


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "   "), ("organizationName", " \u00a0\u3000 ")],
)
async def test_blank_names_are_refused(client, db, field, value):
    resp = await client.post("/api/auth/register", json=account(**{field: value}))
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"] == [{"path": field, "message": "must not be blank"}]
    assert await counts(db) == {"organizations": 0, "users": 0, "outbox": 0, "sessions": 0}


@pytest.mark.parametrize("email", ["no-at-sign.example.com", "two@@example.com", "white space@example.com", "@example.com"])
async def test_malformed_email_is_refused(client, db, email):
    resp = await client.post("/api/auth/register", json=account(email=email))
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert body["details"][0]["path"] == "email"
    assert await counts(db) == {"organizations": 0, "users": 0, "outbox": 0, "sessions": 0}


async def test_two_organizations_get_separate_rows(client, db):
    a = await (await client.post("/api/auth/register", json=account(email="a@example.com"))).json()
    b = await (await client.post("/api/auth/register", json=account(email="b@example.com"))).json()
    assert a["organizationId"] != b["organizationId"] and a["userId"] != b["userId"]
    rows = {r["email"]: r["organization_id"] for r in await db.fetch("SELECT email, organization_id FROM users")}
    assert rows == {"a@example.com": uuid.UUID(a["organizationId"]), "b@example.com": uuid.UUID(b["organizationId"])}
    mails = {r["to_address"]: r["organization_id"] for r in await db.fetch("SELECT to_address, organization_id FROM outbox")}
    assert mails == rows


async def test_register_is_throttled_per_ip(client, db):
    for i in range(10):
        assert (await client.post("/api/auth/register", json=account(email=f"u{i}@example.com"))).status == 201
    resp = await client.post("/api/auth/register", json=account(email="u10@example.com"))
    assert resp.status == 429
    assert_error(await resp.json(), "rate_limited")
    assert int(resp.headers["Retry-After"]) > 0
    assert await db.fetchval("SELECT count(*) FROM users") == 10
