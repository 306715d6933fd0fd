"""The admin API: organizations, magic links, config reload; x-admin-key auth that fails closed."""
import asyncio
import json
import os
import shutil
import uuid

import pytest

from gateway import db as gdb
from gateway import security
from tests.conftest import ADMIN_KEY, PUBLIC_BASE_URL, assert_error, listening

ADMIN = {"x-admin-key": ADMIN_KEY}


async def admin_json(resp, status=200):
    text = await resp.text()
    assert ADMIN_KEY not in text  # the key never comes back, whatever the outcome
    assert resp.status == status, text
    return await resp.json()


def send(client, method, path, body=None, headers=None):
    """JSON when there is a body; otherwise no body and no Content-Type (as curl sends a bare POST)."""
    if body is not None:
        return client.request(method, path, json=body, headers=headers)
    return client.request(method, path, headers=headers, skip_auto_headers=["Content-Type"])


@pytest.fixture
async def events(db):
    """Every invalidation event published on the shared channel while the test runs."""
    seen = []
    await db.add_listener(gdb.CHANNEL, lambda *args: seen.append(json.loads(args[-1])))
    return seen


async def wait_for_event(events, event):
    for _ in range(200):
        if event in events:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{event} not published; saw {events}")


# ---- auth -----------------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/api/admin/organizations", None),
    ("GET", f"/api/admin/organizations/{uuid.uuid4()}", None),
    ("PATCH", f"/api/admin/organizations/{uuid.uuid4()}", {"plan": "PRO"}),
    ("POST", f"/api/admin/users/{uuid.uuid4()}/magic-link", None),
    ("POST", "/api/admin/config/reload", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("headers", [{}, {"x-admin-key": "wrong"}, {"x-admin-key": ADMIN_KEY + "x"},
                                     {"x-admin-key": ""}, {"Authorization": f"Bearer {ADMIN_KEY}"}])
async def test_admin_auth_failures(client, db, method, path, body, headers):
    resp = await send(client, method, path, body, headers)
    assert_error(await admin_json(resp, 401), "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_api_fails_closed_without_a_key(make_client, db, method, path, body):
    client = await make_client(admin_api_key=None)
    for headers in (ADMIN, {"x-admin-key": "None"}, {}):
        resp = await send(client, method, path, body, headers)
        assert_error(await admin_json(resp, 401), "unauthorized")


async def test_session_cookie_is_not_admin(client, db, signup):
    t = await signup()
    resp = await client.get("/api/admin/organizations", headers=t.auth)
    assert_error(await admin_json(resp, 401), "unauthorized")


# ---- list -----------------------------------------------------------------------------------------

async def test_list_paginates_in_a_stable_order(client, db, signup):
    tenants = [await signup(org_name=f"Clinic {i}") for i in range(5)]
    # Same created_at for two of them: the id breaks the tie, so pages never repeat or skip.
    await db.execute("UPDATE organizations SET created_at = '2025-01-01T00:00:00Z' WHERE id = ANY($1::uuid[])",
                     [uuid.UUID(tenants[3].org_id), uuid.UUID(tenants[4].org_id)])
    seen = []
    for page in (1, 2, 3):
        body = await admin_json(await client.get(f"/api/admin/organizations?page={page}&limit=2", headers=ADMIN))
        assert body["pagination"] == {"page": page, "limit": 2, "total": 5, "totalPages": 3}
        seen += [o["id"] for o in body["organizations"]]
    assert len(seen) == 5 and set(seen) == {t.org_id for t in tenants}
    assert seen[:2] == sorted([tenants[3].org_id, tenants[4].org_id])
    assert seen[2:] == [tenants[0].org_id, tenants[1].org_id, tenants[2].org_id]

    body = await admin_json(await client.get("/api/admin/organizations?page=4&limit=2", headers=ADMIN))
    assert body["organizations"] == [] and body["pagination"]["total"] == 5

    body = await admin_json(await client.get("/api/admin/organizations", headers=ADMIN))
    assert body["pagination"] == {"page": 1, "limit": 20, "total": 5, "totalPages": 1}
    first = next(o for o in body["organizations"] if o["id"] == tenants[0].org_id)
    assert first["name"] == "Clinic 0" and first["plan"] is None and first["status"] == "ACTIVE"
    assert first["minutesUsed"] == 0 and first["minutesLimit"] == 0 and first["usersCount"] == 1


async def test_list_filters_by_plan_and_name(client, db, signup):
    a = await signup(plan="PRO", org_name="Sunny Dental")
    b = await signup(plan="STARTER", org_name="sunny_side Vets")
    c = await signup(org_name="100% Plumbing")
    d = await signup(org_name="Shady Dental")

    async def ids(query):
        body = await admin_json(await client.get(f"/api/admin/organizations?{query}", headers=ADMIN))
        assert body["pagination"]["total"] == len(body["organizations"])
        return {o["id"] for o in body["organizations"]}

    assert await ids("plan=PRO") == {a.org_id}
    assert await ids("plan=none") == {c.org_id, d.org_id}
    assert await ids("q=SUNNY") == {a.org_id, b.org_id}
    assert await ids("q=dental&plan=PRO") == {a.org_id}
    assert await ids("q=dental") == {a.org_id, d.org_id}
    # LIKE wildcards are literal characters.
    assert await ids("q=%25") == {c.org_id}
    assert await ids("q=_") == {b.org_id}
    assert await ids("q=y_s") == {b.org_id}
    assert await ids("q=%5C") == set()
    assert await ids("q=") == {a.org_id, b.org_id, c.org_id, d.org_id}


@pytest.mark.parametrize("query", ["page=0", "page=abc", "limit=0", "limit=101", "plan=GOLD", "plan=pro",
                                   "sort=name", "q=" + "x" * 101])
async def test_list_bad_queries(client, db, query):
    resp = await client.get(f"/api/admin/organizations?{query}", headers=ADMIN)
    assert_error(await admin_json(resp, 400), "invalid_request")


# ---- get ------------------------------------------------------------------------------------------

async def test_get_organization(client, db, signup):
    t = await signup(plan="ADVANCED", org_name="Acme")
    await db.execute("UPDATE organizations SET minutes_used = 12.5 WHERE id = $1", uuid.UUID(t.org_id))
    body = await admin_json(await client.get(f"/api/admin/organizations/{t.org_id}", headers=ADMIN))
    row = await db.fetchrow("SELECT * FROM organizations WHERE id = $1", uuid.UUID(t.org_id))
    assert body["id"] == t.org_id and body["name"] == "Acme"
    assert body["plan"] == "ADVANCED" and body["status"] == "ACTIVE"
    assert body["minutesUsed"] == 12.5
    assert body["minutesLimit"] == 300 and body["minutesLimitOverride"] is None
    assert body["currentCycleStart"] == row["current_cycle_start"].isoformat()
    assert body["currentCycleEnd"] == row["current_cycle_end"].isoformat()
    assert body["billingAnchorDay"] == row["billing_anchor_day"]
    assert body["usersCount"] == 1
    assert body["users"] == [{"id": t.user_id, "email": t.email, "name": "Owner", "role": "OWNER",
                              "createdAt": body["users"][0]["createdAt"]}]
    assert "password_hash" not in str(body) and "passwordHash" not in body["users"][0]


@pytest.mark.parametrize("org_id", ["not-a-uuid", str(uuid.uuid4()), "1", "%00"])
async def test_get_unknown_organization_is_404(client, db, org_id):
    resp = await client.get(f"/api/admin/organizations/{org_id}", headers=ADMIN)
    assert_error(await admin_json(resp, 404), "not_found")


# ---- patch ----------------------------------------------------------------------------------------

async def test_patch_changes_plan_limit_and_status(client, db, signup, events):
    t = await signup(plan="STARTER")
    other = await signup(plan="STARTER")
    url = f"/api/admin/organizations/{t.org_id}"
    body = await admin_json(await client.patch(url, json={"plan": "PRO"}, headers=ADMIN))
    assert body["plan"] == "PRO" and body["minutesLimit"] == 1000 and body["status"] == "ACTIVE"
    # Every other process hears about it too.
    await wait_for_event(events, {"kind": "organization_changed", "id": t.org_id})

    body = await admin_json(await client.patch(url, json={"minutesLimit": 42, "status": "CANCELLED"}, headers=ADMIN))
    assert (body["plan"], body["minutesLimit"], body["minutesLimitOverride"], body["status"]) == ("PRO", 42, 42, "CANCELLED")
    row = await db.fetchrow("SELECT plan, minutes_limit, status FROM organizations WHERE id = $1", uuid.UUID(t.org_id))
    assert tuple(row) == ("PRO", 42, "CANCELLED")

    body = await admin_json(await client.patch(url, json={"minutesLimit": None, "plan": None}, headers=ADMIN))
    assert (body["plan"], body["minutesLimit"], body["minutesLimitOverride"]) == (None, 0, None)
    # Only the target changed.
    assert await db.fetchval("SELECT plan FROM organizations WHERE id = $1", uuid.UUID(other.org_id)) == "STARTER"


@pytest.mark.parametrize("body", [{}, {"plan": "GOLD"}, {"plan": "pro"}, {"status": "DELETED"}, {"minutesLimit": -1},
                                  {"minutesLimit": 1.5}, {"minutesLimit": "10"}, {"name": "x"},
                                  {"plan": "PRO", "status": "PAUSED"}])
async def test_patch_refuses_bad_input_without_writing(client, db, signup, body):
    t = await signup(plan="STARTER")
    resp = await client.patch(f"/api/admin/organizations/{t.org_id}", json=body, headers=ADMIN)
    assert_error(await admin_json(resp, 400), "invalid_request")
    row = await db.fetchrow("SELECT plan, minutes_limit, status FROM organizations WHERE id = $1", uuid.UUID(t.org_id))
    assert tuple(row) == ("STARTER", None, "ACTIVE")


@pytest.mark.parametrize("org_id", ["nope", str(uuid.uuid4())])
async def test_patch_unknown_organization_is_404(client, db, org_id):
    resp = await client.patch(f"/api/admin/organizations/{org_id}", json={"plan": "PRO"}, headers=ADMIN)
    assert_error(await admin_json(resp, 404), "not_found")


async def test_plan_change_reaches_a_cached_session_at_once(client, db, signup):
    t = await signup(plan="STARTER")
    services = await listening(client)
    resp = await client.get("/api/embed-token", headers=t.auth)
    assert resp.status == 403
    assert_error(await resp.json(), "plan_upgrade_required")
    assert (await client.get("/api/business-info", headers=t.auth)).status == 200
    assert services.session_cache.get(security.token_hash(t.token)) is not None  # the session is cached

    await admin_json(await client.patch(f"/api/admin/organizations/{t.org_id}", json={"plan": "PRO"}, headers=ADMIN))
    assert services.session_cache.get(security.token_hash(t.token)) is None  # evicted before the reply
    resp = await client.get("/api/embed-token", headers=t.auth)
    assert resp.status != 403, await resp.text()  # the handler may still be a stub (501)


async def test_suspended_organization_is_refused_at_once(client, db, signup):
    t, other = await signup(), await signup()
    await listening(client)
    assert (await client.get("/api/business-info", headers=t.auth)).status == 200
    await admin_json(await client.patch(f"/api/admin/organizations/{t.org_id}", json={"status": "SUSPENDED"}, headers=ADMIN))
    resp = await client.get("/api/business-info", headers=t.auth)
    assert resp.status == 403
    assert_error(await resp.json(), "organization_suspended")
    assert (await client.get("/api/business-info", headers=other.auth)).status == 200

    await admin_json(await client.patch(f"/api/admin/organizations/{t.org_id}", json={"status": "ACTIVE"}, headers=ADMIN))
    assert (await client.get("/api/business-info", headers=t.auth)).status == 200


# ---- magic link -----------------------------------------------------------------------------------

async def test_magic_link_signs_the_user_in_once(client, db, signup):
    t, other = await signup(), await signup()
    body = await admin_json(await send(client, "POST", f"/api/admin/users/{t.user_id}/magic-link", headers=ADMIN))
    prefix = f"{PUBLIC_BASE_URL}/api/auth/magic-link?token="
    assert body["url"].startswith(prefix) and body["expiresInSeconds"] == 900
    token = body["url"][len(prefix):]
    row = await db.fetchrow("SELECT kind, user_id, organization_id, used_at FROM auth_tokens WHERE token_hash = $1",
                            security.token_hash(token))
    assert tuple(row) == ("magic_link", uuid.UUID(t.user_id), uuid.UUID(t.org_id), None)
    assert await db.fetchval("SELECT count(*) FROM auth_tokens WHERE position($1::bytea in token_hash) > 0",
                             token.encode()) == 0  # stored only hashed

    resp = await client.get(body["url"][len(PUBLIC_BASE_URL):], allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == f"{PUBLIC_BASE_URL}/dashboard"
    cookie = resp.cookies["next-auth.session-token"].value
    client.session.cookie_jar.clear()
    session = await (await client.get("/api/auth/session", headers={"Cookie": f"next-auth.session-token={cookie}"})).json()
    assert session["user"]["email"] == t.email and session["user"]["email"] != other.email

    resp = await client.get(body["url"][len(PUBLIC_BASE_URL):], allow_redirects=False)
    assert resp.status == 400  # single use


@pytest.mark.parametrize("user_id", ["nope", str(uuid.uuid4())])
async def test_magic_link_unknown_user_is_404(client, db, user_id):
    resp = await send(client, "POST", f"/api/admin/users/{user_id}/magic-link", headers=ADMIN)
    assert_error(await admin_json(resp, 404), "not_found")
    assert await db.fetchval("SELECT count(*) FROM auth_tokens") == 0


# ---- config reload --------------------------------------------------------------------------------

@pytest.fixture
def config_files(tmp_path, settings):
    plans, endpoints = tmp_path / "plans.yaml", tmp_path / "endpoints.yaml"
    shutil.copy(settings.plans_file, plans)
    shutil.copy(settings.endpoints_file, endpoints)
    return plans, endpoints


async def test_reload_without_changes_tells_other_processes(client, db, events):
    body = await admin_json(await send(client, "POST", "/api/admin/config/reload", headers=ADMIN))
    assert body == {"reloaded": True, "changes": []}
    await wait_for_event(events, {"kind": "config_reload", "pid": os.getpid()})


async def test_reload_moves_a_feature_then_refuses_an_invalid_file(make_client, db, signup, config_files, settings,
                                                                   events):
    plans, endpoints = config_files
    client = await make_client(plans_file=plans, endpoints_file=endpoints)
    t = await signup(plan="STARTER")
    resp = await client.get("/api/embed-token", headers=t.auth)
    assert_error(await resp.json(), "plan_upgrade_required")

    text = plans.read_text()
    assert "features: [assistant_name.edit, sms.send, a2p.register, embed_tokens, calls.recordings]" in text
    text = text.replace("features: [kb.edit]", "features: [kb.edit, embed_tokens]").replace(
        "a2p.register, embed_tokens, calls.recordings]", "a2p.register, calls.recordings]")
    plans.write_text(text)

    body = await admin_json(await send(client, "POST", "/api/admin/config/reload", headers=ADMIN))
    assert body["reloaded"] is True
    assert "route GET /api/embed-token: requiredPlan PRO -> STARTER" in body["changes"]
    assert "tier STARTER: gains embed_tokens" in body["changes"]
    resp = await client.get("/api/embed-token", headers=t.auth)
    assert resp.status != 403, await resp.text()

    good = plans.read_text()
    plans.write_text(good.replace("features: [kb.edit, embed_tokens]", "features: [kb.edit, embed_tokens, teleport]"))
    bad_line = next(i for i, line in enumerate(plans.read_text().splitlines(), 1) if "teleport" in line)
    body = await admin_json(await send(client, "POST", "/api/admin/config/reload", headers=ADMIN), 400)
    assert_error(body, "invalid_config")
    assert any(p.startswith(f"plans.yaml:{bad_line}: ") and "teleport" in p for p in body["problems"]), body
    # The previous (reloaded) config keeps serving.
    resp = await client.get("/api/embed-token", headers=t.auth)
    assert resp.status != 403, await resp.text()

    endpoints.write_text(endpoints.read_text() + "\nroutes: []\n")  # duplicate key
    body = await admin_json(await send(client, "POST", "/api/admin/config/reload", headers=ADMIN), 400)
    assert_error(body, "invalid_config")
    assert any(p.startswith("endpoints.yaml:") and "duplicate key" in p for p in body["problems"]), body
    assert (await client.get("/api/business-info", headers=t.auth)).status == 200
    await asyncio.sleep(0.05)
    assert [e["kind"] for e in events].count("config_reload") == 1  # refused reloads tell nobody

    # Fixed files reload again; nothing changed compared with the config that kept serving.
    plans.write_text(good)
    shutil.copy(settings.endpoints_file, endpoints)
    body = await admin_json(await send(client, "POST", "/api/admin/config/reload", headers=ADMIN))
    assert body == {"reloaded": True, "changes": []}
