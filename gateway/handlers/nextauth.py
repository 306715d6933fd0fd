"""NextAuth-compatible session endpoints, so an existing NextAuth front end works unchanged.

NextAuth's client posts ``application/x-www-form-urlencoded`` with a ``csrfToken`` that must match
the ``next-auth.csrf-token`` cookie (double submit), and with ``json=true`` expects ``{url}`` back
instead of a redirect. API clients may post JSON instead: a cross-site page cannot send JSON
without a CORS preflight, so JSON needs no CSRF token.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from aiohttp import web

from gateway import security, sessions
from gateway.context import Ctx
from gateway.errors import ApiError, json_response, redirect
from gateway.handlers import handler
from gateway.store import users


_OUR_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")

def _is_form(ctx: Ctx) -> bool:
    return ctx.request.content_type == "application/x-www-form-urlencoded"


def _check_csrf(ctx: Ctx) -> None:
    cookie = ctx.request.cookies.get(ctx.settings.csrf_cookie_name, "")
    expected = cookie.split("|", 1)[0]
    if not security.same(ctx.body.get("csrfToken"), expected):
        raise ApiError(403, "Missing or wrong csrfToken (GET /api/auth/csrf first)", "csrf_mismatch")


def _origin(url: str) -> tuple[str, str] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return parts.scheme.lower(), parts.netloc.lower()


def _safe_callback(ctx: Ctx, url: str | None, default_path: str) -> str:
    """Redirect only to our own front end (PUBLIC_BASE_URL's origin or APP_ORIGINS): an open
    redirect would turn a sign-in page into a phishing relay."""
    base = ctx.settings.public_base_url
    # Control characters and spaces: browsers strip some of them ("/\t/evil.example" is
    # "//evil.example"), and CR/LF would split the Location header.
    if not url or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        return base + default_path
    if url.startswith("/") and not url.startswith("//"):
        return base + url
    allowed = {_origin(base), *(_origin(o) for o in ctx.settings.app_origins)}
    origin = _origin(url)
    return url if origin is not None and origin in allowed else base + default_path


def _user_json(principal_or_row: dict) -> dict:
    return {
        "id": str(principal_or_row["id"]),
        "name": principal_or_row["name"],
        "email": principal_or_row["email"],
        "organizationId": str(principal_or_row["organization_id"]),
        "role": principal_or_row["role"],
    }


@handler
async def csrf(ctx: Ctx) -> web.Response:
    existing = ctx.request.cookies.get(ctx.settings.csrf_cookie_name, "").split("|", 1)[0]
    # Reuse the cookie's token only when it is one of ours (URL-safe text), never echo anything else.
    token = existing if _OUR_TOKEN.fullmatch(existing) else security.new_token()
    resp = json_response({"csrfToken": token}, headers={"Cache-Control": "no-store"})
    resp.set_cookie(ctx.settings.csrf_cookie_name, f"{token}|{security.token_hash(token).hex()}", path="/",
                    httponly=True, samesite="Lax", secure=ctx.settings.https)
    return resp


@handler
async def credentials(ctx: Ctx) -> web.Response:
    form = _is_form(ctx)
    if form:
        _check_csrf(ctx)
    wants_json_url = form and ctx.body.get("json") == "true"
    user = await users.by_email(ctx.db, security.normalize_email(ctx.body["email"]))
    ok = await security.verify_password(user["password_hash"] if user else None, ctx.body["password"])
    if not ok or user is None:
        failure = f"{ctx.settings.public_base_url}/login?error=CredentialsSignin"
        if form and not wants_json_url:
            return redirect(failure)
        if wants_json_url:
            return json_response({"url": failure, "error": "CredentialsSignin"}, status=401)
        raise ApiError(401, "Wrong email or password", "invalid_credentials")
    if user["status"] == "SUSPENDED":
        raise ApiError(403, "This organization is suspended; contact support", "organization_suspended")
    if security.needs_rehash(user["password_hash"]):
        # Argon2 parameters were raised since this hash was made: upgrade it while we know the password.
        await users.replace_hash(ctx.db, user["id"], user["password_hash"], await security.hash_password(ctx.body["password"]))
    # A fresh token at every sign-in (no session fixation); earlier sessions stay valid.
    token, expires = await sessions.start(ctx.db, user["id"], user["organization_id"])
    if form:
        target = _safe_callback(ctx, ctx.body.get("callbackUrl"), "/dashboard")
        resp = json_response({"url": target}) if wants_json_url else redirect(target)
    else:
        resp = json_response({"user": _user_json(user), "expires": expires.isoformat()})
    sessions.set_cookie(resp, ctx.settings, token, expires)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@handler
async def session(ctx: Ctx) -> web.Response:
    p = ctx.principal
    if p.kind != "session":
        return json_response({}, headers={"Cache-Control": "no-store"})
    user = {"id": p.user_id, "name": p.name, "email": p.email, "organization_id": p.organization_id, "role": p.role}
    body = {"user": _user_json(user) | {"mustChangePassword": p.must_change_password},
            "expires": p.session_expires.isoformat() if p.session_expires else None}
    return json_response(body, headers={"Cache-Control": "no-store"})


@handler
async def signout(ctx: Ctx) -> web.Response:
    form = _is_form(ctx)
    if form:
        _check_csrf(ctx)
    if ctx.principal.session_hash is not None:
        await sessions.end(ctx.db, ctx.services.session_cache, ctx.principal.session_hash)
    target = _safe_callback(ctx, (ctx.body or {}).get("callbackUrl"), "/")
    resp = redirect(target) if form and (ctx.body or {}).get("json") != "true" else json_response({"url": target})
    sessions.clear_cookie(resp, ctx.settings)
    return resp
