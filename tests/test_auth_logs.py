"""Nothing secret in the gateway's logs during sign-up, sign-in, reset, magic link and sign-out."""
from __future__ import annotations

import json
import re
import sys
import uuid

import pytest
import structlog

from gateway import security
from gateway.logs import configure_logging

COOKIE = "next-auth.session-token"
PASSWORD = "Log-Test-Password-0001"
NEW_PASSWORD = "Log-Test-Password-0002"
WRONG_PASSWORD = "Log-Test-Wrong-Guess-0003"


@pytest.fixture
async def client(make_jarless):
    return await make_jarless()


@pytest.fixture
def gateway_log(capsys, monkeypatch):
    """The gateway's real log configuration at its most talkative level, writing to the captured
    stdout. Call ``start()`` in the test body: pytest swaps the captured stream between fixture
    set-up and the test call. conftest configures logging once at warning level and structlog
    caches loggers on first use, so module-level loggers are swapped for fresh ones meanwhile."""
    saved = structlog.get_config()

    def start() -> None:
        configure_logging("debug")  # binds to the sys.stdout of this moment: the captured one
        proxy_type = type(structlog.get_logger())
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] in ("gateway", "policies", "providers") and module is not None:
                for attr, value in list(vars(module).items()):
                    if isinstance(value, proxy_type):
                        monkeypatch.setattr(module, attr, structlog.get_logger(name))
        capsys.readouterr()

    def read() -> tuple[list[dict], str]:
        captured = capsys.readouterr()
        lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
        return lines, captured.out + captured.err

    yield start, read
    structlog.configure(**saved)


async def test_no_password_or_token_in_the_logs(client, db, gateway_log):
    start_logging, read_logs = gateway_log
    start_logging()
    email = "log.owner@example.com"
    resp = await client.post("/api/auth/register", json={"name": "Log Owner", "email": email, "password": PASSWORD,
                                                         "organizationName": "Log Co"})
    assert resp.status == 201
    user_id, org_id = uuid.UUID((await resp.json())["userId"]), uuid.UUID((await resp.json())["organizationId"])
    secrets = [PASSWORD, NEW_PASSWORD, WRONG_PASSWORD]

    # Sign-in: a failure (the password is in the body), a short-password validation error, then success.
    assert (await client.post("/api/auth/callback/credentials", json={"email": email, "password": WRONG_PASSWORD})).status == 401
    assert (await client.post("/api/auth/register", json={"name": "x", "email": "y@example.com", "password": "Sh0rt!",
                                                          "organizationName": "z"})).status == 400
    resp = await client.post("/api/auth/callback/credentials", json={"email": email, "password": PASSWORD})
    assert resp.status == 200
    session = resp.cookies[COOKIE].value
    secrets.append(session)
    csrf_resp = await client.get("/api/auth/csrf")
    secrets.append((await csrf_resp.json())["csrfToken"])
    assert (await client.get("/api/auth/session", headers={"Cookie": f"{COOKIE}={session}"})).status == 200

    # Reset: the token travels in the outbox mail and the reset body.
    assert (await client.post("/api/auth/forgot-password", json={"email": email})).status == 200
    mail = await db.fetchval("SELECT body_text FROM outbox WHERE kind = 'password_reset'")
    reset_token = re.search(r"token=(\S+)", mail).group(1)
    secrets.append(reset_token)
    assert (await client.post("/api/auth/reset-password", json={"token": reset_token, "password": NEW_PASSWORD})).status == 200
    assert (await client.post("/api/auth/reset-password", json={"token": reset_token, "password": NEW_PASSWORD})).status == 400

    # Magic link: the token is in the query string.
    magic = security.new_token()
    secrets.append(magic)
    await db.execute(
        "INSERT INTO auth_tokens (token_hash, kind, user_id, organization_id, expires_at) "
        "VALUES ($1, 'magic_link', $2, $3, now() + interval '15 minutes')",
        security.token_hash(magic), user_id, org_id,
    )
    assert (await client.head("/api/auth/magic-link", params={"token": magic})).status == 200
    resp = await client.get("/api/auth/magic-link", params={"token": magic}, allow_redirects=False)
    assert resp.status == 302
    magic_session = resp.cookies[COOKIE].value
    secrets.append(magic_session)
    assert (await client.get("/api/auth/magic-link", params={"token": magic}, allow_redirects=False)).status == 400

    # Change password and sign out.
    resp = await client.put("/api/auth/password", json={"currentPassword": NEW_PASSWORD, "newPassword": PASSWORD + "!"},
                            headers={"Cookie": f"{COOKIE}={magic_session}"})
    assert resp.status == 200
    secrets.append(PASSWORD + "!")
    assert (await client.post("/api/auth/signout", json={}, headers={"Cookie": f"{COOKIE}={magic_session}"})).status == 200

    lines, text = read_logs()
    # The capture works: one access line per request, with its route.
    routes = {line.get("route") for line in lines if line.get("event") == "request"}
    assert {"auth.register", "auth.login", "auth.csrf", "auth.session", "auth.forgot-password", "auth.reset-password",
            "auth.magic-link", "auth.magic-link.head", "auth.password", "auth.signout"} <= routes
    assert len([line for line in lines if line.get("event") == "request"]) == 14  # every request made above
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:4]}...) reached the logs"
        assert security.token_hash(secret).hex() not in text
    # Paths are logged without their query string (it carries one-time tokens).
    assert all("?" not in line.get("path", "") for line in lines)
