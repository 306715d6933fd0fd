"""Twilio Voice access tokens for the browser (Voice JS SDK), signed locally: no network call.

A token is a JWT (HS256, header ``cty: twilio-fpa;v=1``) signed with an API Key secret, issued by
the API Key SID for the Account SID, with a voice grant. The widget only places calls, so the
grant has an outgoing TwiML App and no incoming permission.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

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
    # nbf and exp from one clock reading, so exp - nbf is exactly the ttl.
    token = AccessToken(creds.account_sid, creds.api_key_sid, creds.api_key_secret,
                        identity=identity, nbf=issued, valid_until=issued + ttl)
    token.add_grant(VoiceGrant(outgoing_application_sid=creds.twiml_app_sid,
                               outgoing_application_params=params or None))
    return token.to_jwt()
