"""The request pipeline, the same for every route, composed from the route's declared policies:

    request id + logging -> route match (404/405, CORS preflight) -> body read (size, type, strict JSON)
    -> pre-auth rate limits (ip, token, body field) -> auth method -> feature gate
    -> per-user/organization rate limits -> query/body validation -> handler -> JSON reply or error shape

A request reads ``services.config`` once, at its start: a reload swaps that reference, so
in-flight requests finish on the config they started with.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

import structlog
from aiohttp import ClientError, web

from gateway import db as gdb
from gateway import security
from gateway.context import Ctx
from gateway.errors import ApiError, error_response, json_response
from policies import auth as auth_methods
from policies import cors, gates, ratelimit, validation

log = structlog.get_logger("gateway.access")
# Echoed into a response header and log lines: only a short, plain token is taken as given.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
SERVICES: web.AppKey[Any] = web.AppKey("services", object)
REQUEST_ID = web.RequestKey("request_id", str)
ROUTE_NAME = web.RequestKey("route_name", str)
CORS_POLICY = web.RequestKey("cors_policy", object)
_KEPT_HEADERS = frozenset({"Location", "Allow", "Retry-After", "WWW-Authenticate", "Cache-Control"})


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get("X-Request-Id", "")
    return incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(12).hex()


def client_ip(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        # The right-most entry was added by our own proxy; anything left of it is client-supplied.
        last = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if last:  # "a, " would otherwise put every such client in one shared rate-limit bucket
            return last
    return request.remote or "unknown"


async def handle(request: web.Request) -> web.StreamResponse:
    """The one aiohttp handler: request id, the one error shape for everything, CORS on errors
    too, one access log line. (A plain handler, not a middleware: aiohttp's middleware chain costs
    several microseconds per request and there is nothing else to chain.)"""
    started = time.perf_counter()
    rid = _request_id(request)
    request[REQUEST_ID] = rid
    try:
        resp = await dispatch(request)
    except ApiError as err:
        resp = error_response(err)
    except web.HTTPException as exc:  # aiohttp's own, or a handler's `raise web.HTTPFound(...)`
        kept = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}  # a redirect keeps its Location
        resp = error_response(ApiError(exc.status, exc.reason or "Error", headers=kept))
    except ClientError:
        # An outside service (a provider adapter's HTTP call) failed: not our database, not a bug.
        # Before UNAVAILABLE, which would also catch it (aiohttp's connection errors are OSErrors).
        resp = error_response(ApiError(502, "An outside service did not answer; try again shortly", "upstream_unavailable"))
        log.warning("upstream_unavailable", request_id=rid, route=request.get(ROUTE_NAME))
    except gdb.UNAVAILABLE:
        resp = error_response(ApiError(503, "The database is unavailable; try again shortly", "service_unavailable",
                                       headers={"Retry-After": "5"}))
        log.warning("database_unavailable", request_id=rid, route=request.get(ROUTE_NAME))
    except Exception:
        log.exception("unhandled_error", request_id=rid, route=request.get(ROUTE_NAME))
        resp = error_response(ApiError(500, "Internal error", "internal_error", requestId=rid))
    policy = request.get(CORS_POLICY)
    if policy is not None:
        services = request.app[SERVICES]
        cors.add_cors_headers(resp, policy, request.headers.get("Origin"), services.settings)
    resp.headers["X-Request-Id"] = rid
    log.info(
        "request",
        request_id=rid,
        route=request.get(ROUTE_NAME),
        method=request.method,
        path=request.path,  # never the query string: it can carry one-time tokens
        status=resp.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return resp


def _limit_value(ctx: Ctx, key: str) -> str | None:
    if key == "ip":
        return ctx.client_ip
    if key == "token":
        return auth_methods.presented_embed_token(ctx)
    if key == "user":
        return str(ctx.principal.user_id) if ctx.principal.user_id else None
    if key == "organization":
        return str(ctx.principal.organization_id) if ctx.principal.organization_id else None
    value = ctx.body.get(key[5:]) if isinstance(ctx.body, dict) else None  # body.<field>
    # The same normalisation as account emails, so other spellings of one account share its count.
    return security.normalize_email(value) if isinstance(value, str) and value.strip() else None


async def _count(ctx: Ctx, before_auth: bool) -> None:
    hits = []
    for limit in ctx.route.rate_limits:
        if limit.before_auth == before_auth:
            value = _limit_value(ctx, limit.key)
            if value is not None:
                hits.append((limit, value))
    if hits:
        await ratelimit.hit(ctx.db, hits, ctx.settings.rate_limit_multiplier, leases=ctx.services.rate_leases)


async def dispatch(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    config = services.config  # one snapshot for the whole request
    routes, params = config.match(request.path)
    if routes is None:
        raise ApiError(404, f"No route for {request.path}", "not_found")
    if request.method == "OPTIONS":
        # The preflight's answer (even a refusal) follows the policy of the method asked about.
        wanted = routes.get(request.headers.get("Access-Control-Request-Method", "").upper())
        request[CORS_POLICY] = (wanted or next(iter(routes.values()))).cors
        return cors.preflight(routes, request, services.settings)
    route = routes.get(request.method)
    if route is None:
        raise ApiError(405, f"{request.method} is not allowed on {request.path}", "method_not_allowed",
                       headers={"Allow": ", ".join(sorted({*routes, "OPTIONS"}))})
    request[CORS_POLICY] = route.cors
    request[ROUTE_NAME] = route.name
    ctx = Ctx(
        request=request,
        route=route,
        config=config,
        services=services,
        request_id=request[REQUEST_ID],
        client_ip=client_ip(request, services.settings.trust_forwarded_for),
        params=params,
    )
    if route.takes_body:
        ctx.raw_body, ctx.body = await validation.read_body(request, route)
    await _count(ctx, before_auth=True)
    ctx.principal = await auth_methods.METHODS[route.auth](ctx)
    gates.check_feature(ctx)
    await _count(ctx, before_auth=False)
    if request.rel_url.raw_query_string or not route.empty_query_ok:
        ctx.query = validation.parse_query(request, route.query_validator)
        validation.validate(route.query_validator, ctx.query, "query")
    validation.validate_body(route, request.content_type, ctx.raw_body, ctx.body)
    result = await route.handler(ctx)
    if isinstance(result, web.StreamResponse):
        return result
    return json_response(result)
