"""Sandbox mode: with no credentials for a service, use local stand-ins and say so loudly.

For now this covers the Twilio voice access tokens that the widget exchange signs locally: with
no TWILIO_* credentials, stable sandbox values are generated once and kept in the data dir, so a
newcomer's tokens keep verifying across restarts. (The provider fakes of issue 3 extend this.)
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets

import structlog

from gateway.settings import Settings

log = structlog.get_logger("gateway.sandbox")


def _sandbox_twilio(path) -> dict[str, str]:  # noqa: ANN001 - pathlib.Path
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
    sandboxed: dict[str, str] = {}
    twilio = ("twilio_account_sid", "twilio_api_key_sid", "twilio_api_key_secret", "twilio_twiml_app_sid")
    if not all(getattr(settings, name) for name in twilio):
        values = _sandbox_twilio(settings.data_dir / "sandbox" / "twilio.json")
        settings = dataclasses.replace(settings, **{k: getattr(settings, k) or values[k] for k in twilio})
        sandboxed["twilio"] = "TWILIO_ACCOUNT_SID/TWILIO_API_KEY_SID/TWILIO_API_KEY_SECRET/TWILIO_TWIML_APP_SID not all set"
        log.warning("SANDBOX: twilio credentials not configured; voice tokens are signed with local sandbox keys "
                    "and will not work against real Twilio", service="twilio")
    return settings, sandboxed
