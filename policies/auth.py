"""Auth methods by name, as endpoints.yaml refers to them.

Each method turns a request into a Principal or refuses it. A method whose secret is not
configured refuses every request (fail closed). Secrets are compared in constant time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from uuid import UUID

from gateway import security
from gateway.context import ANONYMOUS, Ctx, Principal
from gateway.errors import ApiError
from gateway.store import embed_tokens as embed_store
from gateway.store import sessions as session_store
from policies import origins
from providers.vapi import verify_server_message


@dataclass(frozen=True)
class CachedSession:
    principal: Principal
    plan: str | None
    status: str
    expires_ts: float

    @property
    def organization_id(self) -> UUID | None:
        return self.principal.organization_id

    @property
    def user_id(self) -> UUID | None:
        return self.principal.user_id


@dataclass
class CachedEmbedToken:
    row: Any  # the token with its organization's plan, status, name and number
    organization_id: UUID
    user_id: None = None
    expires_ts: float = math.inf  # embed tokens do not expire; revocation evicts them
    last_touched: float = 0.0  # monotonic time this process last recorded a use


def cookie_value(header: str, name: str) -> str | None:
    """One cookie from a Cookie header. Our tokens are plain URL-safe text, so a split is exact, and
    it is far cheaper than aiohttp's full cookie parse on every authenticated request."""
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip('"') or None
    return None


def session_token(ctx: Ctx) -> str | None:
    return cookie_value(ctx.request.headers.get("Cookie", ""), ctx.settings.session_cookie_name)


async def load_session(ctx: Ctx) -> CachedSession | None:
    token = session_token(ctx)
    if not token or len(token) > 200:
        return None
    digest = security.token_hash(token)

    async def load() -> CachedSession | None:
        row = await session_store.lookup(ctx.db, digest)
        if row is None:
            return None
        principal = Principal(
            kind="session",
            organization_id=row["organization_id"],
            user_id=row["user_id"],
            email=row["email"],
            name=row["name"],
            role=row["role"],
            must_change_password=row["must_change_password"],
            session_hash=digest,
            session_expires=row["expires_at"],
        )
        return CachedSession(principal, row["plan"], row["status"], row["expires_at"].timestamp())

    return await ctx.services.session_cache.get_or_load(digest, load)


def _adopt(ctx: Ctx, found: CachedSession) -> Principal:
    ctx.plan, ctx.org_status = found.plan, found.status
    return found.principal


async def session(ctx: Ctx) -> Principal:
    found = await load_session(ctx)
    if found is None:
        raise ApiError(401, "Sign in required", "unauthorized")
    if found.status == "SUSPENDED":
        raise ApiError(403, "This organization is suspended; contact support", "organization_suspended")
    return _adopt(ctx, found)


async def session_optional(ctx: Ctx) -> Principal:
    found = await load_session(ctx)
    return _adopt(ctx, found) if found else ANONYMOUS


async def admin(ctx: Ctx) -> Principal:
    expected = ctx.settings.admin_api_key
    if not expected:
        raise ApiError(401, "The admin API is disabled on this server (ADMIN_API_KEY is not set)", "unauthorized")
    if not security.same(ctx.request.headers.get("x-admin-key"), expected):
        raise ApiError(401, "A valid x-admin-key header is required", "unauthorized")
    return Principal(kind="admin")


async def cron(ctx: Ctx) -> Principal:
    expected = ctx.settings.cron_secret
    if not expected:
        raise ApiError(401, "Scheduled jobs are disabled on this server (CRON_SECRET is not set)", "unauthorized")
    header = ctx.request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not security.same(value.strip(), expected):
        raise ApiError(401, "A valid Bearer token is required", "unauthorized")
    return Principal(kind="cron")


def presented_embed_token(ctx: Ctx) -> str | None:
    value = ctx.body.get("embedToken") if isinstance(ctx.body, dict) else None
    return value if isinstance(value, str) and value.startswith("ept_") and len(value) <= 200 else None


async def embed_token(ctx: Ctx) -> Principal:
    """A website's embed token, used from a page whose Origin is on the token's allow-list.

    Browsers always send Origin on a cross-origin POST, so a missing, ``null`` or malformed one is
    refused. Origin is checked before the organization's state so that a page on another site
    learns nothing about the token beyond "not for you"."""
    token = presented_embed_token(ctx)
    if token is None:
        raise ApiError(403, "A valid embed token (ept_...) is required", "invalid_embed_token")
    host = origins.origin_host(ctx.request.headers.get("Origin"))
    if host is None:
        raise ApiError(403, "Embed tokens work only from a web page (http or https Origin)", "origin_not_allowed")
    digest = security.token_hash(token)

    async def load() -> CachedEmbedToken | None:
        found = await embed_store.find_active(ctx.db, digest)
        return CachedEmbedToken(row=found, organization_id=found["organization_id"]) if found else None

    cached = await ctx.services.embed_token_cache.get_or_load(digest, load)
    if cached is None:
        raise ApiError(403, "This embed token is unknown or revoked", "invalid_embed_token")
    row = cached.row
    if not origins.host_allowed(host, row["allowed_domains"]):
        raise ApiError(403, "This embed token may not be used from this website", "origin_not_allowed")
    if row["status"] == "SUSPENDED":
        raise ApiError(403, "This organization is suspended", "organization_suspended")
    if row["status"] == "CANCELLED":  # a cancelled subscription serves no website visitors
        raise ApiError(403, "This organization's service has ended", "organization_cancelled")
    ctx.plan, ctx.org_status = row["plan"], row["status"]
    ctx.extras["embed_token"] = cached
    return Principal(kind="embed_token", organization_id=row["organization_id"], embed_token_id=row["id"])


async def vapi_secret(ctx: Ctx) -> Principal:
    """VAPI server messages carry our secret as ``X-Vapi-Secret`` (the legacy inline secret, and
    what we set in ``server.headers``) or as ``Authorization: Bearer`` (a Bearer credential)."""
    expected = ctx.settings.vapi_webhook_secret
    if not expected:
        raise ApiError(401, "VAPI webhooks are disabled on this server (VAPI_WEBHOOK_SECRET is not set)", "unauthorized")
    if not verify_server_message(ctx.request.headers, expected):
        raise ApiError(401, "A valid X-Vapi-Secret header is required", "unauthorized")
    return Principal(kind="provider")


async def none(ctx: Ctx) -> Principal:
    return ANONYMOUS


METHODS: dict[str, Callable[[Ctx], Awaitable[Principal]]] = {
    "session": session,
    "session_optional": session_optional,
    "admin": admin,
    "cron": cron,
    "embed_token": embed_token,
    "vapi_secret": vapi_secret,
    "none": none,
}
