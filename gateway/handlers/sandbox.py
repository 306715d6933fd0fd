"""Admin routes that drive sandbox mode's fakes: play a call, read the mailbox."""
from __future__ import annotations

from typing import Any
from uuid import UUID

from gateway.context import Ctx
from gateway.errors import ApiError, not_found
from gateway.handlers import handler
from gateway.store import organizations
from providers.vapi import VapiClient


def _sandbox(ctx: Ctx, service: str) -> Any:
    fake = getattr(ctx.services.sandbox, service, None) if ctx.services.sandbox else None
    if fake is None:
        raise ApiError(409, f"{service} is not sandboxed on this server (its credentials are configured)", "not_sandboxed")
    return fake


async def _assistant_for(ctx: Ctx, org: Any, webhook_url: str) -> str:
    """The organization's assistant on the VAPI fake, created on first use, pointed at our webhook."""
    sandbox = ctx.services.sandbox
    async with sandbox.assistant_lock:  # parallel first calls must not create several assistants
        known = sandbox.assistants.get(str(org["id"]))
        if known:
            return known
        client = VapiClient(ctx.settings.vapi_api_key, base_url=ctx.settings.vapi_base_url)
        try:
            assistant = await client.create_assistant(
                name=f"{org['name']} receptionist", system_prompt=f"You answer the phone for {org['name']}.",
                first_message=f"Thanks for calling {org['name']}, how can I help?", server_url=webhook_url,
                server_secret=ctx.settings.vapi_webhook_secret, metadata={"organizationId": str(org["id"])})
        finally:
            await client.close()
        sandbox.assistants[str(org["id"])] = assistant.id
        return assistant.id


@handler
async def play_call(ctx: Ctx) -> dict:
    fake = _sandbox(ctx, "vapi")
    org = await organizations.get(ctx.db, UUID(ctx.body["organizationId"]))
    if org is None:
        raise not_found("No such organization")
    # The fake posts to this gateway itself: in `make run` its own listening address; under a test
    # server, the address this (admin-only) request came in on.
    base = ctx.settings.internal_base_url or str(ctx.request.url.origin())
    webhook_url = f"{base}/api/webhooks/vapi"
    assistant_id = await _assistant_for(ctx, org, webhook_url)
    played = await fake.play_inbound_call(assistant_id, seconds=ctx.body.get("seconds", 60),
                                          caller=ctx.body.get("caller", "+15555550123"), url=webhook_url)
    return {
        "callId": played.call["id"],
        "assistantId": assistant_id,
        "delivered": played.delivered,
        "deliveries": [{"type": d.type, "status": d.status} for d in played.deliveries],
    }


@handler
async def mailbox(ctx: Ctx) -> dict:
    smtp = _sandbox(ctx, "smtp")
    limit = ctx.query.get("limit", 20)
    messages = list(smtp.messages)[-limit:]
    return {"messages": [{"from": m.mail_from, "to": m.to, "subject": m.subject, "body": m.body,
                          "messageId": m.message_id} for m in messages]}
