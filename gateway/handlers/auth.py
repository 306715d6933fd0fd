"""Accounts: register, forgotten and changed passwords, magic links."""
from __future__ import annotations

import asyncio
import re
import time

import asyncpg
from aiohttp import web

from gateway import db as gdb
from gateway import security, sessions
from gateway.context import Ctx
from gateway.errors import ApiError, json_response, redirect
from gateway.handlers import handler
from gateway.store import auth_tokens, organizations, outbox, users

# Forgot-password answers after at least this long whether or not the account exists, so its
# timing does not tell an attacker which emails have accounts.
FORGOT_PASSWORD_FLOOR_SECONDS = 0.35
# What is left of an address after normalising must still look like one (the schema only checks "@").
_EMAIL_SHAPE = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$")


def _blank(path: str) -> ApiError:
    return ApiError(400, f"{path} must not be blank", "invalid_request", details=[{"path": path, "message": "must not be blank"}])


@handler
async def register(ctx: Ctx) -> web.Response:
    body = ctx.body
    email = security.normalize_email(body["email"])
    if not _EMAIL_SHAPE.match(email):
        raise ApiError(400, "email must be a valid email address", "invalid_request",
                       details=[{"path": "email", "message": "must be a valid email address"}])
    name, org_name = body["name"].strip(), body["organizationName"].strip()
    if not name:
        raise _blank("name")
    if not org_name:
        raise _blank("organizationName")
    password_hash = await security.hash_password(body["password"])  # before the transaction: slow
    try:
        # Organization, owner and welcome mail commit together or not at all.
        async with ctx.db.acquire() as conn, conn.transaction():
            org_id = await organizations.create(conn, org_name)
            user_id = await users.create(conn, org_id, email, name, password_hash)
            await outbox.enqueue(
                conn, org_id, "welcome", email, f"Welcome to your AI receptionist, {name}",
                f"Hi {name},\n\nYour organization {org_name} is ready. Sign in at {ctx.settings.public_base_url}/login "
                "to set up your assistant.\n",
            )
    except asyncpg.UniqueViolationError:
        raise ApiError(409, "An account with this email already exists", "email_taken") from None
    return json_response({"message": "Account created", "organizationId": str(org_id), "userId": str(user_id)}, status=201)


@handler
async def forgot_password(ctx: Ctx) -> dict:
    started = time.monotonic()
    email = security.normalize_email(ctx.body["email"])
    token = security.new_token()
    async with ctx.db.acquire() as conn, conn.transaction():
        user = await users.by_email(conn, email)
        if user is not None:
            await auth_tokens.create(conn, "password_reset", security.token_hash(token), user["id"], user["organization_id"])
            # PUBLIC_BASE_URL, never the request's Host: a forged Host would mail the victim a link
            # to the attacker's site carrying a live token. The mail goes to the stored address,
            # never to the one typed in the request.
            link = f"{ctx.settings.public_base_url}/reset-password?token={token}"
            await outbox.enqueue(
                conn, user["organization_id"], "password_reset", user["email"], "Reset your password",
                f"Someone asked to reset the password of {user['email']}.\n\nOpen this link within an hour to choose a "
                f"new one:\n{link}\n\nIf it was not you, ignore this email.\n",
            )
    await asyncio.sleep(max(0.0, FORGOT_PASSWORD_FLOOR_SECONDS - (time.monotonic() - started)))
    return {"message": "If an account exists for that email, a reset link is on its way"}


@handler
async def reset_password(ctx: Ctx) -> dict:
    digest = security.token_hash(ctx.body["token"])
    # A cheap look first, so that guessing tokens never costs a (deliberately slow) password hash;
    # the consume below still decides, atomically.
    if not await auth_tokens.peek(ctx.db, "password_reset", digest):
        raise ApiError(400, "This reset link is invalid, used or expired", "invalid_token")
    new_hash = await security.hash_password(ctx.body["password"])
    cache = ctx.services.session_cache
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            found = await auth_tokens.consume(conn, "password_reset", digest)
            if found is None:
                raise ApiError(400, "This reset link is invalid, used or expired", "invalid_token")
            await users.set_password(conn, found["user_id"], new_hash)
            # Whoever knew the old password, or holds an older link, is out: every session and
            # every other pending one-time token of the user ends.
            for kind in auth_tokens.TTL:
                await auth_tokens.void_for_user(conn, kind, found["user_id"])
            ended = await sessions.end_all_for_user(conn, cache, found["user_id"])
    sessions.forget(cache, ended)
    return {"message": "Password updated; sign in with the new password"}


@handler
async def change_password(ctx: Ctx) -> dict:
    body, principal = ctx.body, ctx.principal
    user = await users.by_id(ctx.db, principal.user_id)
    if user is None:
        raise ApiError(401, "Sign in required", "unauthorized")
    # A forced change (first sign-in with a password an admin set) needs no current password;
    # "forced" from a user who is not flagged changes nothing.
    forced_ok = body.get("forced") is True and user["must_change_password"]
    if not forced_ok:
        if "currentPassword" not in body:
            raise ApiError(400, "currentPassword is required", "invalid_request",
                           details=[{"path": "currentPassword", "message": "is required"}])
        if not await security.verify_password(user["password_hash"], body["currentPassword"]):
            raise ApiError(400, "The current password is not correct", "invalid_current_password",
                           details=[{"path": "currentPassword", "message": "is not correct"}])
    new_hash = await security.hash_password(body["newPassword"])
    cache = ctx.services.session_cache
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            await users.set_password(conn, user["id"], new_hash)
            await auth_tokens.void_for_user(conn, "password_reset", user["id"])
            # Every other session of this user ends; the one making the change stays signed in.
            ended = await sessions.end_all_for_user(conn, cache, user["id"], keep=principal.session_hash)
            # Cached copies of the kept session still say must_change_password, in every process.
            await gdb.notify(conn, {"kind": "user_changed", "id": str(user["id"])})
    sessions.forget(cache, ended)
    cache.apply({"kind": "user_changed", "id": str(user["id"])})
    return {"success": True}


@handler
async def magic_link(ctx: Ctx) -> web.StreamResponse:
    async with ctx.db.acquire() as conn, conn.transaction():
        found = await auth_tokens.consume(conn, "magic_link", security.token_hash(ctx.query["token"]))
        if found is None:
            raise ApiError(400, "This sign-in link is invalid, used or expired", "invalid_token")
        token, expires = await sessions.start(conn, found["user_id"], found["organization_id"])
    resp = redirect(f"{ctx.settings.public_base_url}/dashboard")
    sessions.set_cookie(resp, ctx.settings, token, expires)
    resp.headers["Referrer-Policy"] = "no-referrer"  # the URL that brought us here holds the token
    return resp


@handler
async def magic_link_head(ctx: Ctx) -> web.StreamResponse:
    """Mail scanners probe links with HEAD: answer without consuming the token."""
    valid = await auth_tokens.peek(ctx.db, "magic_link", security.token_hash(ctx.query["token"]))
    return web.Response(status=200 if valid else 400, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
