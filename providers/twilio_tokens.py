"""Twilio Voice access tokens for the browser (Voice JS SDK), signed locally: no network call.

A token is a JWT (HS256, header ``cty: twilio-fpa;v=1``) signed with an API Key secret, issued by
the API Key SID for the Account SID, with a voice grant. The widget only places calls, so the
grant has an outgoing TwiML App and no incoming permission.

The token is encoded here rather than by the twilio SDK's ``AccessToken``: every widget load on
every customer site signs one, and the SDK's generic JWT path costs about 8 times as much as these
few lines of HS256. tests/test_widget.py checks the result against the SDK's own token claim for
claim, and verifies the signature with PyJWT.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import orjson

MAX_TTL_SECONDS = 86400  # Twilio rejects longer-lived tokens (error 20157)


@dataclass(frozen=True)
class VoiceCredentials:
    account_sid: str
    api_key_sid: str
    api_key_secret: str
    twiml_app_sid: str


def credentials_from(settings: Any) -> VoiceCredentials | None:
    """The four settings the signing needs, or None when any is missing."""
    values = (settings.twilio_account_sid, settings.twilio_api_key_sid,
              settings.twilio_api_key_secret, settings.twilio_twiml_app_sid)
    return VoiceCredentials(*values) if all(values) else None


def voice_access_token(creds: VoiceCredentials, identity: str, ttl: int = 3600,
                       params: dict[str, str] | None = None, now: int | None = None) -> str:
    """A signed token for ``identity`` that may call out through the TwiML App. ``params`` are
    signed into the grant and reach the TwiML App's voice URL with the call."""
    if not 0 < ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    issued = int(time.time()) if now is None else now
    outgoing: dict[str, Any] = {"application_sid": creds.twiml_app_sid}
    if params:
        outgoing["params"] = params
    claims = {
        "jti": f"{creds.api_key_sid}-{issued}",
        "grants": {"identity": identity, "voice": {"outgoing": outgoing}},
        "iss": creds.api_key_sid,
        "sub": creds.account_sid,
        "nbf": issued,  # nbf and exp from one clock reading, so exp - nbf is exactly the ttl
        "exp": issued + ttl,
    }
    signing_input = _HEADER + b"." + _b64(orjson.dumps(claims))
    signature = hmac.new(creds.api_key_secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode("ascii")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_HEADER = _b64(orjson.dumps({"typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1"}))
