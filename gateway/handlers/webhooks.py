"""Webhooks from providers. For now VAPI's server messages are authenticated, deduplicated and
recorded; acting on them (minutes, call records) comes with the calls-and-billing work."""
from __future__ import annotations

import hashlib

import orjson

from gateway.context import Ctx
from gateway.handlers import handler
from gateway.store import webhook_events


def _vapi_event_key(message: dict, raw: bytes) -> str:
    """VAPI may deliver a message twice and has no event id: a call's report is unique per call,
    a status update per call and status; anything else falls back to the exact body."""
    call_id = (message.get("call") or {}).get("id") if isinstance(message.get("call"), dict) else None
    kind = message["type"]
    if call_id and kind == "end-of-call-report":
        return f"{call_id}:{kind}"
    if call_id and kind == "status-update" and message.get("status"):
        return f"{call_id}:{kind}:{message['status']}"
    return f"{kind}:sha256:{hashlib.sha256(raw).hexdigest()}"


@handler
async def vapi(ctx: Ctx) -> dict:
    message = ctx.body["message"]
    first = await webhook_events.record(ctx.db, "vapi", _vapi_event_key(message, ctx.raw_body), message["type"],
                                        orjson.loads(ctx.raw_body))
    kind = message["type"]
    if kind == "tool-calls":
        # VAPI waits for one result per tool call; booking tools arrive with the Cal.com work.
        calls = message.get("toolCallList") or []
        return {"results": [{"toolCallId": c.get("id"), "name": (c.get("function") or {}).get("name") or c.get("name"),
                             "error": "This tool is not available yet"} for c in calls if isinstance(c, dict)]}
    if kind == "assistant-request":
        return {"error": "This number is not set up yet. Please call back later."}
    return {"received": True, "duplicate": not first}
