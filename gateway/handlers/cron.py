"""Scheduled jobs, called by an outside scheduler with the cron secret. Each is idempotent per period."""
from __future__ import annotations

import structlog

from gateway.context import Ctx
from gateway.handlers import handler
from gateway.store import billing

log = structlog.get_logger("gateway.cron")


@handler
async def billing_reset(ctx: Ctx) -> dict:
    """Daily: every organization whose cycle ended starts the next one with its minutes at zero."""
    count = await billing.reset_due_cycles(ctx.db)
    log.info("cron.billing_reset", reset=count)
    return {"reset": count}
