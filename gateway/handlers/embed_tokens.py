"""Embed tokens: what a website puts in its widget snippet to let visitors call the organization.

A token is shown once, at creation; only its SHA-256 and a short display prefix are stored. Each
token carries the hostnames it may be used from (see policies/origins.py).
"""
from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from gateway import security
from gateway import db as gdb
from gateway.context import Ctx
from gateway.errors import ApiError, json_response, not_found
from gateway.handlers import handler
from gateway.store import embed_tokens as store
from gateway.store import organizations
from policies import origins

TOKEN_PREFIX = "ept_"
DISPLAY_PREFIX_LENGTH = 12  # "ept_" and 8 random characters: enough to tell tokens apart, useless to guess
MAX_ACTIVE_TOKENS = 25


def _token_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "label": row["label"],
        "tokenPrefix": row["token_prefix"],
        "allowedDomains": list(row["allowed_domains"]),
        "lastUsedAt": row["last_used_at"].isoformat() if row["last_used_at"] else None,
        "createdAt": row["created_at"].isoformat(),
    }


def _requested_domains(body: dict[str, Any]) -> list[str] | None:
    """The normalised allow-list from the body, or None when the body gives none."""
    entries = body.get("allowedDomains") or []
    if not entries:
        return None
    domains, errors = origins.normalize_domains(entries)
    if errors:
        first = errors[0]
        raise ApiError(400, f"Invalid {first['path']}: {first['message']}", "invalid_request", details=errors)
    return domains


async def _default_domains(conn: Any, org_id: UUID) -> list[str]:
    # No list given: the organization's own website, when it has one. A token usable from
    # nowhere helps nobody; one usable from anywhere would be unsafe.
    org = await organizations.get(conn, org_id)
    host = origins.host_of_website(org["website_url"] if org else None)
    if host is None:
        raise ApiError(400, "List at least one website domain in allowedDomains (or set your business website "
                            "first, which is then used by default)", "invalid_request",
                       details=[{"path": "allowedDomains", "message": "at least one domain is required"}])
    return [host]


@handler
async def list_tokens(ctx: Ctx) -> dict:
    rows = await store.list_active(ctx.db, ctx.org_id)
    return {"tokens": [_token_json(row) for row in rows]}


@handler
async def create_token(ctx: Ctx) -> web.Response:
    body = ctx.body or {}
    label = (body.get("label") or "").strip() or None
    domains = _requested_domains(body)
    token = security.new_token(TOKEN_PREFIX)
    async with ctx.db.acquire() as conn, conn.transaction():
        await store.lock_org(conn, ctx.org_id)
        if domains is None:
            domains = await _default_domains(conn, ctx.org_id)
        if await store.count_active(conn, ctx.org_id) >= MAX_ACTIVE_TOKENS:
            raise ApiError(409, f"An organization can have at most {MAX_ACTIVE_TOKENS} active embed tokens; "
                                "revoke one first", "too_many_tokens", limit=MAX_ACTIVE_TOKENS)
        row = await store.create(conn, ctx.org_id, security.token_hash(token), token[:DISPLAY_PREFIX_LENGTH],
                                 label, domains)
    reply = {"token": token, "prefix": row["token_prefix"], "label": row["label"], "id": str(row["id"]),
             "allowedDomains": list(row["allowed_domains"])}
    # The only time the token exists outside the browser's memory: keep it out of caches.
    return json_response(reply, status=201, headers={"Cache-Control": "no-store"})


@handler
async def revoke_token(ctx: Ctx) -> dict:
    try:
        token_id = UUID(str(ctx.query["id"]))
    except ValueError:
        raise not_found("No such embed token") from None
    async with ctx.db.acquire() as conn, conn.transaction():
        token_hash = await store.revoke(conn, ctx.org_id, token_id)
        if token_hash is None:
            raise not_found("No such embed token")
        # Every process caches token lookups; this evicts it everywhere (NOTIFY is sent at commit).
        event = {"kind": "tokens_revoked", "hashes": [token_hash.hex()]}
        await gdb.notify(conn, event)
    ctx.services.embed_token_cache.apply(event)  # here, after the commit: no stale re-caching
    return {"revoked": True}
