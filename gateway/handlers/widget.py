"""The website widget's token exchange: an embed token, from an allowed website, becomes a
one-hour Twilio Voice access token for calling the organization.

The auth method (policies/auth.embed_token) has already found the token, checked the page's
Origin against its allow-list and put the row (with the organization's name and number) in
``ctx.extras``. This handler does no lookup of its own: at most one conditional write, then local
signing, because every widget load on every customer site lands here.
"""
from __future__ import annotations

import secrets
import time

from aiohttp import web

from gateway.context import Ctx
from gateway.errors import ApiError, json_response
from gateway.handlers import handler
from gateway.store import embed_tokens as store
from providers import twilio_tokens

TTL_SECONDS = 3600


@handler
async def exchange(ctx: Ctx) -> web.Response:
    creds = twilio_tokens.credentials_from(ctx.settings)
    if creds is None:
        raise ApiError(503, "Browser calling is not configured on this server", "provider_not_configured")
    # An organization without a number yet still gets a token (phoneNumber null): the widget can
    # show "not available yet", and the sandbox quick start works before any number is provisioned.
    cached = ctx.extras["embed_token"]
    row = cached.row
    now = time.monotonic()
    if now - cached.last_touched > store.LAST_USED_RESOLUTION_SECONDS:
        # The row may come from this process's cache: remember locally when we last recorded a
        # use; the UPDATE's own condition settles races between processes.
        cached.last_touched = now
        await store.touch(ctx.db, ctx.org_id, row["id"])
    org_id = ctx.org_id
    identity = f"widget-{org_id.hex[:8]}-{secrets.token_hex(6)}"
    # The organization id is signed into the grant, so the TwiML App's voice URL learns which
    # tenant a browser call belongs to from Twilio, not from anything the browser says.
    token = twilio_tokens.voice_access_token(creds, identity, ttl=TTL_SECONDS,
                                             params={"organizationId": str(org_id)})
    reply = {"token": token, "identity": identity, "phoneNumber": row["phone_number"],
             "orgName": row["org_name"], "expiresIn": TTL_SECONDS}
    return json_response(reply, headers={"Cache-Control": "no-store"})
