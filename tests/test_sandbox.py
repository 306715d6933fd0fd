"""Sandbox mode: with no credentials, the fakes run in-process and everything works end to end."""
from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from gateway.pipeline import SERVICES
from tests.conftest import ADMIN_KEY, PASSWORD, assert_error

ADMIN = {"x-admin-key": ADMIN_KEY}


@pytest.fixture
async def sandbox_client(make_client: Any) -> Any:
    # As `gateway serve` with nothing configured: no VAPI, Twilio REST, Stripe or SMTP credentials.
    return await make_client(sandbox=True, vapi_api_key=None, vapi_webhook_secret=None, twilio_auth_token=None,
                             stripe_secret_key=None, stripe_webhook_secret=None, smtp_url=None)


async def mail_to(client: Any, address: str, subject_part: str, timeout: float = 10.0) -> dict[str, Any]:
    """The newest sandbox email to ``address`` whose subject contains ``subject_part`` (the outbox
    worker polls every second)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get("/api/admin/sandbox/mail", headers=ADMIN)
        assert resp.status == 200, await resp.text()
        for message in reversed((await resp.json())["messages"]):
            if address in message["to"] and subject_part in message["subject"]:
                return message
        assert asyncio.get_running_loop().time() < deadline, f"no '{subject_part}' mail to {address}"
        await asyncio.sleep(0.2)


async def test_readyz_lists_the_sandboxed_services(sandbox_client: Any) -> None:
    body = await (await sandbox_client.get("/readyz")).json()
    assert {"vapi", "twilio", "stripe", "mail"} <= set(body["sandboxed"])
    settings = sandbox_client.server.app[SERVICES].settings
    assert settings.vapi_base_url.startswith("http://127.0.0.1:") and "@127.0.0.1:" in settings.smtp_url
    # The sandbox mailbox takes mail only from the gateway (it needs the generated password).
    import smtplib

    port = sandbox_client.server.app[SERVICES].sandbox.smtp.port

    def send_without_auth() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.sendmail("x@evil.example", ["victim@example.com"], "Subject: Reset your password\r\n\r\nhttp://evil")

    with pytest.raises(smtplib.SMTPException):
        await asyncio.to_thread(send_without_auth)
    assert (await (await sandbox_client.get("/api/admin/sandbox/mail", headers=ADMIN)).json())["messages"] == []


async def test_welcome_and_reset_emails_arrive_and_the_reset_link_works(sandbox_client: Any, db: Any) -> None:
    email = "newcomer@example.com"
    resp = await sandbox_client.post("/api/auth/register", json={
        "name": "Nia", "email": email, "password": PASSWORD, "organizationName": "Nia Dental"})
    assert resp.status == 201
    welcome = await mail_to(sandbox_client, email, "Welcome")
    assert "Nia Dental" in welcome["body"]

    assert (await sandbox_client.post("/api/auth/forgot-password", json={"email": email})).status == 200
    reset = await mail_to(sandbox_client, email, "Reset")
    link = re.search(r"http://gateway\.test/reset-password\?token=([A-Za-z0-9_-]+)", reset["body"])
    assert link, reset["body"]
    resp = await sandbox_client.post("/api/auth/reset-password", json={"token": link.group(1), "password": "a brand new passphrase"})
    assert resp.status == 200, await resp.text()
    resp = await sandbox_client.post("/api/auth/callback/credentials", json={"email": email, "password": "a brand new passphrase"})
    assert resp.status == 200
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == 2


async def test_a_played_call_arrives_as_verified_webhooks(sandbox_client: Any, signup: Any, db: Any) -> None:
    t = await signup()
    resp = await sandbox_client.post("/api/admin/sandbox/calls", json={"organizationId": t.org_id, "seconds": 95},
                                     headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["delivered"] is True
    assert [d["type"] for d in body["deliveries"]][-1] == "end-of-call-report"
    assert all(d["status"] == 200 for d in body["deliveries"])
    rows = await db.fetch("SELECT event_type, event_key FROM webhook_events ORDER BY id")
    assert rows[-1]["event_key"] == f"{body['callId']}:end-of-call-report"
    assert {r["event_type"] for r in rows} == {"status-update", "end-of-call-report"}
    # Parallel first calls for another organization create one assistant.
    other = await signup()
    replies = await asyncio.gather(*(sandbox_client.post("/api/admin/sandbox/calls", json={"organizationId": other.org_id},
                                                         headers=ADMIN) for _ in range(4)))
    assert len({(await r.json())["assistantId"] for r in replies}) == 1
    # A second call for the same organization reuses its assistant.
    again = await (await sandbox_client.post("/api/admin/sandbox/calls", json={"organizationId": t.org_id},
                                             headers=ADMIN)).json()
    assert again["assistantId"] == body["assistantId"] and again["callId"] != body["callId"]


async def test_sandbox_routes_refuse_bad_input_auth_and_a_configured_server(sandbox_client: Any, client: Any,
                                                                            signup: Any) -> None:
    t = await signup()
    for body, status in (({}, 400), ({"organizationId": "nope"}, 400),
                         ({"organizationId": "00000000-0000-4000-8000-000000000000"}, 404),
                         ({"organizationId": t.org_id, "caller": "555"}, 400)):
        resp = await sandbox_client.post("/api/admin/sandbox/calls", json=body, headers=ADMIN)
        assert resp.status == status, (body, await resp.text())
    assert (await sandbox_client.get("/api/admin/sandbox/mail")).status == 401
    assert (await sandbox_client.post("/api/admin/sandbox/calls", json={"organizationId": t.org_id},
                                      headers={"x-admin-key": "wrong"})).status == 401
    # The default test app has no sandbox: the routes say so instead of pretending.
    resp = await client.get("/api/admin/sandbox/mail", headers=ADMIN)
    assert resp.status == 409
    assert_error(await resp.json(), "not_sandboxed")
    resp = await client.post("/api/admin/sandbox/calls", json={"organizationId": t.org_id}, headers=ADMIN)
    assert resp.status == 409


async def test_gateway_sandbox_call_cli(sandbox_client: Any, signup: Any, db: Any, monkeypatch: Any,
                                        capsys: Any) -> None:
    from gateway.cli import main

    t = await signup()
    monkeypatch.setenv("HOST", "127.0.0.1")
    monkeypatch.setenv("PORT", str(sandbox_client.server.port))
    monkeypatch.setenv("ADMIN_API_KEY", ADMIN_KEY)
    code = await asyncio.to_thread(main, ["sandbox", "call", "--org", t.org_id, "--seconds", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"delivered": true' in out
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE event_type = 'end-of-call-report'") == 1
    monkeypatch.delenv("ADMIN_API_KEY")
    assert await asyncio.to_thread(main, ["sandbox", "call", "--org", t.org_id]) == 2
