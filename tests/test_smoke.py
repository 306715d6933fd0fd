from tests.conftest import assert_error


async def test_register_login_session(client, signup):
    t = await signup()
    resp = await client.get("/api/auth/session", headers=t.auth)
    assert resp.status == 200
    body = await resp.json()
    assert body["user"]["email"] == t.email
    assert body["user"]["organizationId"] == t.org_id
    assert resp.headers["X-Request-Id"]


async def test_unknown_path_is_json_404(client, db):
    resp = await client.get("/nope")
    assert resp.status == 404
    assert_error(await resp.json(), "not_found")
