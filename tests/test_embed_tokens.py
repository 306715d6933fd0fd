"""Embed tokens: list, create (shown once, stored hashed), revoke; plan gate; tenant isolation."""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from datetime import datetime

from tests.conftest import assert_error

URL = "/api/embed-token"
TOKEN_RE = re.compile(r"^ept_[A-Za-z0-9_-]{43}$")


async def create(client, tenant, status=201, **body):
    resp = await client.post(URL, json=body, headers=tenant.auth)
    data = await resp.json()
    assert resp.status == status, data
    return data


async def listed(client, tenant):
    resp = await client.get(URL, headers=tenant.auth)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["tokens"]


async def test_create_shows_token_once_and_stores_only_its_hash(client, signup, db):
    t = await signup(plan="PRO")
    resp = await client.post(URL, json={"label": "  Main site ", "allowedDomains": ["Example.COM", "*.example.com"]},
                             headers=t.auth)
    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    token = body["token"]
    assert TOKEN_RE.match(token)
    assert body["prefix"] == token[:12]
    assert body["label"] == "Main site"
    assert body["allowedDomains"] == ["example.com", "*.example.com"]
    uuid.UUID(body["id"])

    row = await db.fetchrow("SELECT * FROM embed_tokens")
    assert str(row["id"]) == body["id"]
    assert str(row["organization_id"]) == t.org_id
    assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert row["token_prefix"] == token[:12]
    assert row["revoked_at"] is None and row["last_used_at"] is None
    # Neither the token nor its secret part is anywhere in the table.
    dump = await db.fetchval("SELECT string_agg(t::text, ' ') FROM embed_tokens t")
    assert token not in dump and token[4:] not in dump and token[12:] not in dump

    tokens = await listed(client, t)
    assert tokens == [{
        "id": body["id"], "label": "Main site", "tokenPrefix": token[:12],
        "allowedDomains": ["example.com", "*.example.com"], "lastUsedAt": None,
        "createdAt": tokens[0]["createdAt"],
    }]
    datetime.fromisoformat(tokens[0]["createdAt"])
    assert "token" not in tokens[0]


async def test_each_token_is_different(client, signup, db):
    t = await signup(plan="PRO")
    a = await create(client, t, allowedDomains=["example.com"])
    b = await create(client, t, allowedDomains=["example.com"])
    assert a["token"] != b["token"] and a["id"] != b["id"]


async def test_list_is_newest_first_and_excludes_revoked(client, signup, db):
    t = await signup(plan="ENTERPRISE")  # higher tiers include PRO's features
    ids = [(await create(client, t, label=f"t{i}", allowedDomains=["example.com"]))["id"] for i in range(3)]
    # Make the order unambiguous regardless of clock resolution.
    for i, token_id in enumerate(ids):
        await db.execute("UPDATE embed_tokens SET created_at = now() - make_interval(mins => $1) WHERE id = $2",
                         10 - i, uuid.UUID(token_id))
    assert [x["id"] for x in await listed(client, t)] == ids[::-1]
    resp = await client.delete(URL, params={"id": ids[1]}, headers=t.auth)
    assert resp.status == 200
    assert [x["label"] for x in await listed(client, t)] == ["t2", "t0"]


async def test_blank_or_missing_label_is_null(client, signup, db):
    t = await signup(plan="PRO")
    assert (await create(client, t, label="   ", allowedDomains=["a.example.com"]))["label"] is None
    assert (await create(client, t, label=None, allowedDomains=["a.example.com"]))["label"] is None
    assert (await create(client, t, allowedDomains=["a.example.com"]))["label"] is None


async def test_domains_are_normalised_and_deduplicated(client, signup, db):
    t = await signup(plan="PRO")
    body = await create(client, t, allowedDomains=["Bücher.de", "xn--bcher-kva.de.", "*.Shop.Example.com", "localhost",
                                                   "127.0.0.1"])
    assert body["allowedDomains"] == ["xn--bcher-kva.de", "*.shop.example.com", "localhost", "127.0.0.1"]
    stored = await db.fetchval("SELECT allowed_domains FROM embed_tokens")
    assert stored == body["allowedDomains"]


async def test_bad_domains_are_400_with_paths_and_nothing_written(client, signup, db):
    t = await signup(plan="PRO")
    body = await create(client, t, status=400,
                        allowedDomains=["example.com", "https://example.com", "*.com", "a..b.com", "example.com:80", "*"])
    assert_error(body, "invalid_request")
    assert [d["path"] for d in body["details"]] == [f"allowedDomains[{i}]" for i in (1, 2, 3, 4, 5)]
    assert "allowedDomains[1]" in body["error"]
    assert await db.fetchval("SELECT count(*) FROM embed_tokens") == 0


async def test_schema_violations_are_400(client, signup, db):
    t = await signup(plan="PRO")
    for bad in ({"allowedDomains": "example.com"}, {"allowedDomains": [1]}, {"allowedDomains": [""]},
                {"allowedDomains": ["a.example.com"] * 51}, {"label": "x" * 101, "allowedDomains": ["example.com"]},
                {"allowedDomains": ["example.com"], "orgId": str(uuid.uuid4())}, {"label": 5}):
        body = await create(client, t, status=400, **bad)
        assert_error(body, "invalid_request")
    resp = await client.post(URL, data=b"{not json", headers={**t.auth, "Content-Type": "application/json"})
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM embed_tokens") == 0


async def test_without_domains_defaults_to_the_website_host(client, signup, db):
    t = await signup(plan="PRO")
    await db.execute("UPDATE organizations SET website_url = 'https://www.Acme-Dental.com/contact' WHERE id = $1",
                     uuid.UUID(t.org_id))
    assert (await create(client, t))["allowedDomains"] == ["www.acme-dental.com"]
    assert (await create(client, t, allowedDomains=[]))["allowedDomains"] == ["www.acme-dental.com"]


async def test_without_domains_or_website_is_400(client, signup, db):
    t = await signup(plan="PRO")
    for body in ({}, {"allowedDomains": []}, {"label": "x"}):
        reply = await create(client, t, status=400, **body)
        assert_error(reply, "invalid_request")
        assert "at least one" in reply["error"]
        assert reply["details"][0]["path"] == "allowedDomains"
    # A website URL that has no usable host does not count either.
    await db.execute("UPDATE organizations SET website_url = 'not a url' WHERE id = $1", uuid.UUID(t.org_id))
    assert_error(await create(client, t, status=400), "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM embed_tokens") == 0


async def test_active_tokens_are_capped(client, signup, db):
    t = await signup(plan="PRO")
    org = uuid.UUID(t.org_id)
    for i in range(24):
        await db.execute(
            """INSERT INTO embed_tokens (id, organization_id, token_hash, token_prefix, allowed_domains)
               VALUES ($1, $2, $3, 'ept_xxxxxxxx', '{example.com}')""", uuid.uuid4(), org, os.urandom(32))
    # A revoked token does not count.
    await db.execute(
        """INSERT INTO embed_tokens (id, organization_id, token_hash, token_prefix, allowed_domains, revoked_at)
           VALUES ($1, $2, $3, 'ept_xxxxxxxx', '{example.com}', now())""", uuid.uuid4(), org, os.urandom(32))
    last = await create(client, t, allowedDomains=["example.com"])
    body = await create(client, t, status=409, allowedDomains=["example.com"])
    assert_error(body, "too_many_tokens")
    assert body["limit"] == 25
    assert await db.fetchval("SELECT count(*) FROM embed_tokens WHERE revoked_at IS NULL") == 25
    resp = await client.delete(URL, params={"id": last["id"]}, headers=t.auth)
    assert resp.status == 200
    await create(client, t, allowedDomains=["example.com"])
    # Another organization has its own allowance.
    other = await signup(plan="PRO")
    await create(client, other, allowedDomains=["example.com"])


async def test_cap_holds_under_concurrent_creates(client, signup, db):
    t = await signup(plan="PRO")
    org = uuid.UUID(t.org_id)
    for _ in range(23):
        await db.execute(
            """INSERT INTO embed_tokens (id, organization_id, token_hash, token_prefix, allowed_domains)
               VALUES ($1, $2, $3, 'ept_xxxxxxxx', '{example.com}')""", uuid.uuid4(), org, os.urandom(32))
    replies = await asyncio.gather(*(client.post(URL, json={"allowedDomains": ["example.com"]}, headers=t.auth)
                                     for _ in range(5)))
    assert sorted(r.status for r in replies) == [201, 201, 409, 409, 409]
    assert await db.fetchval("SELECT count(*) FROM embed_tokens WHERE revoked_at IS NULL") == 25


async def test_starter_and_no_plan_get_upgrade_required(client, signup, db):
    for plan in ("STARTER", "ADVANCED", None):
        t = await signup(plan=plan)
        resp = await client.get(URL, headers=t.auth)
        assert resp.status == 403
        body = await resp.json()
        assert_error(body, "plan_upgrade_required")
        assert body["requiredPlan"] == "PRO"
        body = await create(client, t, status=403, allowedDomains=["example.com"])
        assert_error(body, "plan_upgrade_required")
        assert body["requiredPlan"] == "PRO"
    assert await db.fetchval("SELECT count(*) FROM embed_tokens") == 0


async def test_revoke(client, signup, db):
    t = await signup(plan="PRO")
    made = await create(client, t, allowedDomains=["example.com"])
    resp = await client.delete(URL, params={"id": made["id"]}, headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"revoked": True}
    assert await db.fetchval("SELECT revoked_at FROM embed_tokens WHERE id = $1", uuid.UUID(made["id"])) is not None
    assert await listed(client, t) == []
    # Already revoked, unknown: 404.
    for token_id in (made["id"], str(uuid.uuid4())):
        resp = await client.delete(URL, params={"id": token_id}, headers=t.auth)
        assert resp.status == 404
        assert_error(await resp.json(), "not_found")


async def test_revoke_bad_ids_are_400(client, signup, db):
    t = await signup(plan="PRO")
    for query in ({}, {"id": "nope"}, {"id": "1234"}, {"id": str(uuid.uuid4()), "organizationId": t.org_id}):
        resp = await client.delete(URL, params=query, headers=t.auth)
        assert resp.status == 400
        assert_error(await resp.json(), "invalid_request")


async def test_a_downgraded_organization_can_still_revoke(client, signup, db):
    t = await signup(plan="PRO")
    made = await create(client, t, allowedDomains=["example.com"])
    await db.execute("UPDATE organizations SET plan = 'STARTER' WHERE id = $1", uuid.UUID(t.org_id))
    resp = await client.delete(URL, params={"id": made["id"]}, headers=t.auth)
    assert resp.status == 200
    assert await resp.json() == {"revoked": True}


async def test_auth_required(client, signup, db):
    t = await signup(plan="PRO")
    made = await create(client, t, allowedDomains=["example.com"])
    bad = {"Cookie": "next-auth.session-token=" + "x" * 43}
    for headers in ({}, bad):
        for method, kwargs in (("GET", {}), ("POST", {"json": {"allowedDomains": ["example.com"]}}),
                               ("DELETE", {"params": {"id": made["id"]}})):
            resp = await client.request(method, URL, headers=headers, **kwargs)
            assert resp.status == 401, (method, headers)
            assert_error(await resp.json(), "unauthorized")
    assert await db.fetchval("SELECT count(*) FROM embed_tokens WHERE revoked_at IS NULL") == 1


async def test_tenant_isolation(client, signup, db):
    a = await signup(plan="PRO", org_name="Org A")
    b = await signup(plan="PRO", org_name="Org B")
    made_a = await create(client, a, label="A's", allowedDomains=["a.example.com"])
    made_b = await create(client, b, label="B's", allowedDomains=["b.example.com"])
    assert [x["id"] for x in await listed(client, a)] == [made_a["id"]]
    assert [x["id"] for x in await listed(client, b)] == [made_b["id"]]
    resp = await client.get(URL, params={"organizationId": a.org_id}, headers=b.auth)  # no tenant from input
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    # B cannot revoke A's token: 404, and it stays active.
    resp = await client.delete(URL, params={"id": made_a["id"]}, headers=b.auth)
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")
    assert await db.fetchval("SELECT revoked_at FROM embed_tokens WHERE id = $1", uuid.UUID(made_a["id"])) is None
    assert [x["id"] for x in await listed(client, a)] == [made_a["id"]]
    # A body cannot choose the organization.
    body = await create(client, b, status=400, allowedDomains=["b.example.com"], organizationId=a.org_id)
    assert_error(body, "invalid_request")
    rows = await db.fetch("SELECT organization_id, label FROM embed_tokens ORDER BY label")
    assert [(str(r["organization_id"]), r["label"]) for r in rows] == [(a.org_id, "A's"), (b.org_id, "B's")]
