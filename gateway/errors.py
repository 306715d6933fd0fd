"""The one error shape: ``{"error": "<human message>", "code": "<machine_code>", ...details}``."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_unavailable",
    503: "service_unavailable",
}


class ApiError(Exception):
    """Raise anywhere below a handler; the pipeline renders it in the one error shape."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _REASONS.get(status, "error")
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.details}


def _default(value: Any) -> Any:
    """What orjson does not know natively: Postgres numerics (minutes are numeric(12,2)) and sets."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None  # JSON has no NaN/Infinity; orjson writes null for float ones too
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _scrub(value: Any) -> Any:
    """Make strings that carry surrogate escapes (bytes that were not UTF-8 in a header or path,
    echoed in an error message) serialisable, replacing what cannot be shown."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    try:
        body = orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # a str with surrogate escapes: only ever on odd input, so only then scrubbed
        body = orjson.dumps(_scrub(data), default=_default, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    return json_response(err.body(), status=err.status, headers=err.headers)


def not_found(what: str = "Not found") -> ApiError:
    return ApiError(404, what, "not_found")


def redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})
