"""Liveness and readiness."""
from __future__ import annotations

import asyncio

from gateway import db as gdb
from gateway.context import Ctx
from gateway.errors import json_response
from gateway.handlers import handler


@handler
async def healthz(ctx: Ctx) -> dict:
    return {"status": "ok"}


@handler
async def readyz(ctx: Ctx):  # noqa: ANN201
    sandboxed = sorted(ctx.services.sandboxed)
    try:
        await asyncio.wait_for(ctx.db.fetchval("SELECT 1"), timeout=2)
    except gdb.UNAVAILABLE:
        return json_response({"error": "The database is unreachable", "code": "not_ready", "status": "unavailable",
                              "database": "unreachable", "sandboxed": sandboxed}, status=503)
    return {"status": "ready", "database": "ok", "sandboxed": sandboxed}
