"""The operator API (x-admin-key): organizations across tenants, sign-in links, config reload.

These are the only handlers that take an organization id from the path: the admin principal has
no tenant of its own. Nothing here ever echoes the admin key.
"""
from __future__ import annotations

import os
from math import ceil
from typing import Any
from uuid import UUID

import structlog

from gateway import db as gdb
from gateway import security
from gateway.config import ConfigError
from gateway.context import Ctx
from gateway.errors import ApiError, not_found
from gateway.handlers import handler
from gateway.store import auth_tokens, organizations, users

log = structlog.get_logger("gateway.admin")

DEFAULT_PAGE_SIZE = 20
NO_PLAN = "none"  # ?plan=none lists organizations without a paid plan
_PATCH_COLUMNS = {"plan": "plan", "minutesLimit": "minutes_limit", "status": "status"}


def _path_uuid(ctx: Ctx, what: str) -> UUID:
    try:
        return UUID(ctx.params["id"])
    except ValueError:
        raise not_found(f"{what} not found") from None


def _organization(ctx: Ctx, row: Any) -> dict[str, Any]:
    override = row["minutes_limit"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "plan": row["plan"],
        "status": row["status"],
        "minutesUsed": float(row["minutes_used"]),
        # Effective limit: the admin override, else what the plan includes (from plans.yaml now).
        "minutesLimit": override if override is not None else ctx.config.plans.included_minutes(row["plan"]),
        "minutesLimitOverride": override,
        "billingAnchorDay": row["billing_anchor_day"],
        "currentCycleStart": row["current_cycle_start"].isoformat(),
        "currentCycleEnd": row["current_cycle_end"].isoformat(),
        "phoneNumber": row["phone_number"],
        "usersCount": row["users_count"],
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["updated_at"].isoformat(),
    }


async def _detail(ctx: Ctx, conn: Any, org_id: UUID) -> dict[str, Any]:
    row = await organizations.get_with_counts(conn, org_id)
    if row is None:
        raise not_found("Organization not found")
    members = await organizations.members(conn, org_id)
    return {
        **_organization(ctx, row),
        "businessType": row["business_type"],
        "websiteUrl": row["website_url"],
        "timezone": row["timezone"],
        "users": [{"id": str(u["id"]), "email": u["email"], "name": u["name"], "role": u["role"],
                   "createdAt": u["created_at"].isoformat()} for u in members],
    }


@handler
async def list_organizations(ctx: Ctx) -> dict:
    page, limit = ctx.query.get("page", 1), ctx.query.get("limit", DEFAULT_PAGE_SIZE)
    plan = ctx.query.get("plan")
    if plan is not None and plan != NO_PLAN and ctx.config.plans.tier(plan) is None:
        known = ", ".join([*ctx.config.plans.tier_names(), NO_PLAN])
        raise ApiError(400, f"Unknown plan; use one of: {known}", "invalid_request",
                       details=[{"path": "plan", "message": f"must be one of: {known}"}])
    async with ctx.db.acquire() as conn:
        rows, total = await organizations.list_page(
            conn, limit=limit, offset=(page - 1) * limit,
            plan=None if plan == NO_PLAN else plan, no_plan=plan == NO_PLAN, name_contains=ctx.query.get("q") or None,
        )
    return {
        "organizations": [_organization(ctx, r) for r in rows],
        "pagination": {"page": page, "limit": limit, "total": total, "totalPages": ceil(total / limit)},
    }


@handler
async def get_organization(ctx: Ctx) -> dict:
    org_id = _path_uuid(ctx, "Organization")
    async with ctx.db.acquire() as conn:
        return await _detail(ctx, conn, org_id)


@handler
async def patch_organization(ctx: Ctx) -> dict:
    org_id = _path_uuid(ctx, "Organization")
    body = ctx.body
    if body.get("plan") is not None and ctx.config.plans.tier(body["plan"]) is None:
        known = ", ".join(ctx.config.plans.tier_names())
        raise ApiError(400, f"Unknown plan; use one of: {known}, or null", "invalid_request",
                       details=[{"path": "plan", "message": f"must be one of: {known}, or null"}])
    values = {column: body[key] for key, column in _PATCH_COLUMNS.items() if key in body}
    event = {"kind": "organization_changed", "id": str(org_id)}
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            if await organizations.update_fields(conn, org_id, values) is None:
                raise not_found("Organization not found")
            await gdb.notify(conn, event)  # delivered to every process at commit
        # Evict here too, after the commit: this process must not answer the next request from a
        # cached session that still has the old plan or status, even before the NOTIFY arrives.
        ctx.services.session_cache.apply(event)
        log.info("admin.organization_changed", organization_id=str(org_id), fields=sorted(values))
        return await _detail(ctx, conn, org_id)


@handler
async def user_magic_link(ctx: Ctx) -> dict:
    """A one-time sign-in link for support: hand it over out of band, it works once, for 15 minutes."""
    user_id = _path_uuid(ctx, "User")
    token = security.new_token()
    async with ctx.db.acquire() as conn, conn.transaction():
        user = await users.by_id(conn, user_id)
        if user is None:
            raise not_found("User not found")
        await auth_tokens.create(conn, "magic_link", security.token_hash(token), user["id"], user["organization_id"])
    log.info("admin.magic_link_issued", user_id=str(user_id))
    return {
        "url": f"{ctx.settings.public_base_url}/api/auth/magic-link?token={token}",
        "expiresInSeconds": int(auth_tokens.TTL["magic_link"].total_seconds()),
    }


@handler
async def reload_config(ctx: Ctx) -> dict:
    try:
        changes = ctx.services.reload_config()
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
        log.warning("admin.config_reload_refused", problems=problems)
        raise ApiError(400, "The new configuration is invalid; the previous one keeps serving", "invalid_config",
                       problems=problems) from None
    # Every other process re-reads its files too (Services.on_event ignores our own pid).
    await gdb.notify(ctx.db, {"kind": "config_reload", "pid": os.getpid()})
    return {"reloaded": True, "changes": changes}
