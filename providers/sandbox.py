"""Sandbox mode: with no credentials for a service, run its local fake and say so loudly.

``apply_sandbox`` (before the app exists) fills in stable stand-in Twilio credentials for signing
the widget's Voice tokens. ``start_fakes`` (inside the running loop, from the app's cleanup_ctx)
starts the fake of every service whose credentials are missing, on loopback, and returns settings
pointing the adapters at them. A newcomer can then use every feature without any account anywhere:
mail lands in the fake SMTP server's mailbox (GET /api/admin/sandbox/mail), and the VAPI fake plays
whole calls as real webhooks (POST /api/admin/sandbox/calls, `gateway sandbox call`).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.settings import Settings
from providers.fakes.server import FakeServer
from providers.fakes.smtp import FakeSmtp
from providers.fakes.stripe import StripeFake
from providers.fakes.twilio import TwilioFake
from providers.fakes.vapi import VapiFake

log = structlog.get_logger("gateway.sandbox")


def _sandbox_twilio(path: Path) -> dict[str, str]:
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "twilio_account_sid": "AC" + secrets.token_hex(16),
        "twilio_api_key_sid": "SK" + secrets.token_hex(16),
        "twilio_api_key_secret": secrets.token_urlsafe(32),
        "twilio_twiml_app_sid": "AP" + secrets.token_hex(16),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def apply_sandbox(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """Stable stand-in Twilio signing credentials (kept in the data dir, so tokens keep verifying
    across restarts) when the real ones are not all configured."""
    sandboxed: dict[str, str] = {}
    twilio = ("twilio_account_sid", "twilio_api_key_sid", "twilio_api_key_secret", "twilio_twiml_app_sid")
    if not all(getattr(settings, name) for name in twilio):
        values = _sandbox_twilio(settings.data_dir / "sandbox" / "twilio.json")
        settings = dataclasses.replace(settings, **{k: getattr(settings, k) or values[k] for k in twilio})
        sandboxed["twilio-voice-tokens"] = "TWILIO_API_KEY_SID/TWILIO_API_KEY_SECRET/TWILIO_TWIML_APP_SID not all set"
        log.warning("SANDBOX: twilio voice tokens are signed with local stand-in keys (they will not work against "
                    "real Twilio)", service="twilio")
    return settings, sandboxed


@dataclass
class Sandbox:
    """The fakes running in this process, for the admin sandbox routes and for shutdown."""

    vapi: VapiFake | None = None
    twilio: TwilioFake | None = None
    stripe: StripeFake | None = None
    smtp: FakeSmtp | None = None
    servers: list[FakeServer] = field(default_factory=list)
    assistants: dict[str, str] = field(default_factory=dict)  # organization id -> fake assistant id
    assistant_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one assistant per organization

    async def close(self) -> None:
        for fake in (self.vapi, self.twilio, self.stripe):
            if fake is not None:
                await fake.close()
        for server in self.servers:
            await server.stop()
        if self.smtp is not None:
            await self.smtp.stop()


async def _serve(sandbox: Sandbox, app: Any) -> str:
    server = await FakeServer(app).start()
    sandbox.servers.append(server)
    return server.url


async def start_fakes(settings: Settings) -> tuple[Settings, Sandbox, dict[str, str]]:
    """Start the fake of each service without credentials; returns (settings pointing at them, handles, reasons)."""
    sandbox, changes, reasons = Sandbox(), {}, {}
    if not settings.vapi_api_key:
        secret = settings.vapi_webhook_secret or secrets.token_urlsafe(24)
        sandbox.vapi = VapiFake("sandbox-vapi-" + secrets.token_hex(8), webhook_secret=secret)
        changes.update(vapi_api_key=sandbox.vapi.api_key, vapi_webhook_secret=secret,
                       vapi_base_url=await _serve(sandbox, sandbox.vapi.app))
        reasons["vapi"] = "VAPI_API_KEY is not set"
    if not (settings.twilio_auth_token and settings.twilio_account_sid):
        sandbox.twilio = TwilioFake(settings.twilio_account_sid)
        changes.update(twilio_account_sid=sandbox.twilio.account_sid, twilio_auth_token=sandbox.twilio.auth_token,
                       twilio_base_url=await _serve(sandbox, sandbox.twilio.app))
        reasons["twilio"] = "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN are not set"
    if not settings.stripe_secret_key:
        key, whsec = "sk_test_sandbox_" + secrets.token_hex(8), settings.stripe_webhook_secret or "whsec_" + secrets.token_hex(16)
        sandbox.stripe = StripeFake(api_key=key, webhook_secret=whsec, auto_prices=True)
        changes.update(stripe_secret_key=key, stripe_webhook_secret=whsec,
                       stripe_base_url=await _serve(sandbox, sandbox.stripe.app))
        reasons["stripe"] = "STRIPE_SECRET_KEY is not set"
    if not settings.smtp_url:
        # With a password, so that nothing else on the machine can drop look-alike mail in the mailbox.
        sandbox.smtp = await FakeSmtp(username="gateway", password=secrets.token_urlsafe(16)).start()
        changes.update(smtp_url=sandbox.smtp.url)
        reasons["mail"] = "SMTP_URL is not set"
    for service, why in reasons.items():
        log.warning(f"SANDBOX: {service} runs against a local fake ({why}); nothing reaches the real service",
                    service=service)
    return dataclasses.replace(settings, **changes), sandbox, reasons
