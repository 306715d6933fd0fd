"""Named CORS policies from endpoints.yaml.

The origin ``null`` (sandboxed iframes, file://, some redirects) is never allowed: anything could
send it. CORS headers are added to error replies too, or a browser cannot read why it failed.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from gateway.config import CorsPolicy, Route
from gateway.errors import ApiError
from gateway.settings import Settings
from policies import origins


def app_origins(settings: Settings) -> frozenset[str]:
    base = urlsplit(settings.public_base_url)
    return frozenset({f"{base.scheme}://{base.netloc}", *settings.app_origins})


def allowed_origin(policy: CorsPolicy, origin: str | None, settings: Settings) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when this origin gets no CORS."""
    if not origin or origin == "null" or policy.allow_origins == "none":
        return None
    if policy.allow_origins == "any":
        # Any well-formed http(s) origin, by the same rules the embed-token allow-lists use.
        return origin if origins.origin_host(origin) is not None else None
    if policy.allow_origins == "app":
        return origin if origin in app_origins(settings) else None
    return origin if origin in policy.allow_origins else None


def add_cors_headers(resp: web.StreamResponse, policy: CorsPolicy, origin: str | None, settings: Settings) -> None:
    if policy.allow_origins == "none":
        return
    vary = [v.strip() for v in resp.headers.get("Vary", "").split(",") if v.strip()]
    if "origin" not in {v.lower() for v in vary}:  # keep what the handler varies on (e.g. Cookie)
        resp.headers["Vary"] = ", ".join([*vary, "Origin"])
    allowed = allowed_origin(policy, origin, settings)
    if allowed is None:
        return
    resp.headers["Access-Control-Allow-Origin"] = allowed
    if policy.credentials:
        resp.headers["Access-Control-Allow-Credentials"] = "true"
    if policy.expose_headers:
        resp.headers["Access-Control-Expose-Headers"] = ", ".join(policy.expose_headers)


def preflight(routes: dict[str, Route], request: web.Request, settings: Settings) -> web.Response:
    """Answer OPTIONS before any auth: browsers send no credentials on a preflight."""
    origin = request.headers.get("Origin")
    wanted = request.headers.get("Access-Control-Request-Method", "").upper()
    route = routes.get(wanted)
    if route is None:
        raise ApiError(405, f"{wanted or 'That method'} is not allowed here", "method_not_allowed",
                       headers={"Allow": ", ".join(sorted({*routes, "OPTIONS"}))})
    allowed = allowed_origin(route.cors, origin, settings)
    if allowed is None:  # the pipeline adds Vary (and nothing else) for policies that allow some origin
        raise ApiError(403, "This origin may not call this route from a browser", "cors_origin_not_allowed")
    requested = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
    refused = [h for h in requested if h not in route.cors.allow_headers]
    if refused:
        raise ApiError(403, f"Request headers not allowed: {', '.join(refused)}", "cors_header_not_allowed")
    headers = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Allow-Methods": ", ".join(sorted(m for m, r in routes.items() if r.cors.name == route.cors.name)),
        "Access-Control-Max-Age": str(route.cors.max_age),
        "Vary": "Origin",
    }
    if requested:
        headers["Access-Control-Allow-Headers"] = ", ".join(requested)
    if route.cors.credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return web.Response(status=204, headers=headers)
