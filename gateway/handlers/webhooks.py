"""Webhooks from providers. For now VAPI's server messages are authenticated, checked, deduplicated
and recorded; acting on them (minutes, call records, booking tools) comes with later issues."""
from __future__ import annotations

import hashlib
from typing import Any

from gateway.context import Ctx
from gateway.errors import ApiError
from gateway.handlers import handler
from gateway.store import webhook_events
from providers.errors import ProviderError
from providers.vapi import OtherMessage, StatusUpdate, ToolCalls, parse_server_message, tool_calls_reply

# Keys whose values are credentials wherever they appear in a payload: VAPI echoes the assistant,
# including the headers (our X-Vapi-Secret) it sends to our server URL. Never store those.
_SECRET_KEYS = frozenset({"headers", "secret", "serverurlsecret", "authorization", "token", "apikey", "password",
                          "authtoken", "x-vapi-secret"})


def redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "[redacted]" if str(k).lower() in _SECRET_KEYS else redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _vapi_event_key(parsed: Any, raw: bytes) -> str:
    """VAPI may deliver a message twice and has no event id: a call's report is unique per call, a
    status update per call and status; anything else falls back to the exact body. (Lengths are
    bounded by the route's schema, so the key always fits the unique index.)"""
    if parsed.call_id and not isinstance(parsed, (ToolCalls, OtherMessage)):
        if isinstance(parsed, StatusUpdate):
            return f"{parsed.call_id}:status-update:{parsed.status}" if parsed.status else f"sha256:{hashlib.sha256(raw).hexdigest()}"
        return f"{parsed.call_id}:end-of-call-report"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


@handler
async def vapi(ctx: Ctx) -> dict:
    try:
        parsed = parse_server_message(ctx.body)
    except ProviderError as exc:  # checked before anything is recorded
        raise ApiError(400, exc.message, "invalid_request") from None
    kind = ctx.body["message"]["type"]
    first = await webhook_events.record(ctx.db, "vapi", _vapi_event_key(parsed, ctx.raw_body), kind, redacted(ctx.body))
    if isinstance(parsed, ToolCalls):
        # VAPI waits for one result per tool call; the booking tools arrive with the Cal.com work.
        return tool_calls_reply([(call, RuntimeError("This tool is not available yet")) for call in parsed.tool_calls])
    if kind == "assistant-request":
        return {"error": "This number is not set up yet. Please call back later."}
    return {"received": True, "duplicate": not first}
