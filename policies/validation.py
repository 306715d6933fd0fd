"""Reading and validating request input: size, content type, strict JSON, JSON Schema.

Everything a client can send that Python or Postgres would choke on later (NaN, 1e400, NUL bytes,
integers beyond 2**53, 1000-deep nesting) is refused here with a 400, so handlers and SQL never
see it. Error messages name the field and the rule, never echo the value (it may be a password).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import ClientError, web
from aiohttp.http_exceptions import HttpProcessingError
from jsonschema import Draft202012Validator

from gateway.config import Route
from gateway.errors import ApiError

MAX_DEPTH = 32
MAX_SAFE_NUMBER = 2**53
# Query values become numbers only when written plainly: int() would also take "1_000" and " 5 ".
_INTEGER = re.compile(r"-?[0-9]{1,16}")
_NUMBER = re.compile(r"-?[0-9]{1,16}(\.[0-9]{1,16})?([eE][-+]?[0-9]{1,3})?")


def _invalid(message: str, path: str = "") -> ApiError:
    return ApiError(400, message, "invalid_request", details=[{"path": path, "message": message}])


def _check_value(value: Any, depth: int = 0, path: str = "") -> None:
    if depth > MAX_DEPTH:
        raise _invalid(f"JSON nested deeper than {MAX_DEPTH} levels", path)
    if isinstance(value, str):
        if "\x00" in value:
            raise _invalid("NUL characters are not allowed in strings", path)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        if not -MAX_SAFE_NUMBER <= value <= MAX_SAFE_NUMBER:
            raise _invalid("number out of range", path)
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise _invalid("NUL characters are not allowed in keys", path)
            _check_value(item, depth + 1, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, depth + 1, f"{path}[{i}]")


def parse_json(raw: bytes) -> Any:
    try:
        data = orjson.loads(raw)  # orjson already refuses NaN, Infinity and lone surrogates
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"Malformed JSON: {str(exc).split(':')[0]}") from None
    _check_value(data)
    return data


def _pairs(encoded: str, strict: bool) -> list[tuple[str, str]]:
    """``a=1&b=2`` -> pairs; percent-escapes must decode to UTF-8 (no silent U+FFFD in a password)."""
    return parse_qsl(encoded, keep_blank_values=True, strict_parsing=strict, max_num_fields=200,
                     encoding="utf-8", errors="strict")


def _unique(pairs: list[tuple[str, str]], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:  # which one would win is parser-dependent: refuse rather than guess
            raise _invalid(f"{what} {key!r} appears more than once", key)
        out[key] = value
    return out


def parse_form(raw: bytes) -> dict[str, str]:
    try:
        pairs = _pairs(raw.decode("utf-8"), strict=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise _invalid("Malformed form body") from None
    out = _unique(pairs, "Field")
    _check_value(out)
    return out


def _too_large(route: Route) -> ApiError:
    return ApiError(413, f"Body larger than {route.body_limit} bytes", "payload_too_large", limit=route.body_limit)


async def _read_at_most(request: web.Request, route: Route) -> bytes:
    """The whole body, or 413 as soon as it passes the limit (chunked bodies have no length).

    ``StreamReader.read(n)`` returns what has arrived so far, not n bytes: read until the end."""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = await request.content.read(route.body_limit + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > route.body_limit:
                raise _too_large(route)
    except HttpProcessingError:  # e.g. broken chunked encoding
        raise ApiError(400, "Malformed request body", "invalid_request") from None
    except (OSError, ClientError):
        # The client went away mid-body (a socket error, not our database: never a 503).
        raise ApiError(400, "The request body was not received completely", "incomplete_body") from None


async def read_body(request: web.Request, route: Route) -> tuple[bytes, Any]:
    """Enforce the route's size limit and content types; return (raw bytes, parsed body)."""
    if request.content_length is not None and request.content_length > route.body_limit:
        raise _too_large(route)
    raw = await _read_at_most(request, route)
    if not raw:
        # No body at all, whatever Content-Type a client library adds by default (fetch wrappers
        # often send "application/json" on every request): the schema then says what is missing.
        return raw, {} if route.body_validator is not None else None
    if route.body_validator is None and "multipart/form-data" not in route.content_types and raw.strip() != b"{}":
        # A route that declares no body takes none (an empty JSON object is tolerated): fields a
        # client thinks it is sending must not be silently ignored.
        raise _invalid("This route takes no request body")
    ctype = request.content_type
    if ctype not in route.content_types:
        raise ApiError(415, f"Content-Type must be {' or '.join(route.content_types)}", "unsupported_media_type")
    if ctype == "application/json":
        return raw, parse_json(raw)
    if ctype == "application/x-www-form-urlencoded":
        return raw, parse_form(raw)
    return raw, None  # multipart: the handler reads it from the raw bytes


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    """A query string value as the type its schema wants; left a string (-> a type error) otherwise."""
    kind = schema.get("type")
    if kind == "integer" and _INTEGER.fullmatch(value):
        number = int(value)
        return number if -MAX_SAFE_NUMBER <= number <= MAX_SAFE_NUMBER else value
    if kind == "number" and _NUMBER.fullmatch(value):
        number = float(value)
        return number if abs(number) <= MAX_SAFE_NUMBER else value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def parse_query(request: web.Request, validator: Draft202012Validator | None) -> dict[str, Any]:
    props = (validator.schema.get("properties") or {}) if validator else {}
    try:
        # From the raw string: request.query would hide repeats and turn bad UTF-8 into U+FFFD.
        pairs = _pairs(request.rel_url.raw_query_string, strict=False)
    except (UnicodeDecodeError, ValueError):
        raise _invalid("Malformed query string (too many parameters, or not UTF-8)") from None
    out: dict[str, Any] = {}
    for key, value in _unique(pairs, "Query parameter").items():
        if "\x00" in value or "\x00" in key:
            raise _invalid("NUL characters are not allowed", key)
        out[key] = _coerce(value, props.get(key, {}))
    return out


def _messages(err: Any) -> list[tuple[str, str]]:
    path = ".".join(str(p) for p in err.absolute_path)
    v, arg = err.validator, err.validator_value
    if v == "required":
        # jsonschema raises one error per missing name, each carrying the whole list: name them all
        # here and let validate() drop the repeats.
        missing = [name for name in arg if name not in (err.instance or {})]
        return [((f"{path}.{name}" if path else name), "is required") for name in missing]
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return [(path, f"unknown field(s): {', '.join(extra)}")]
    messages = {
        "type": lambda: f"must be of type {arg if isinstance(arg, str) else ' or '.join(arg)}",
        "minLength": lambda: f"must be at least {arg} characters",
        "maxLength": lambda: f"must be at most {arg} characters",
        "pattern": lambda: "has an invalid format",
        "format": lambda: f"must be a valid {arg}",
        "enum": lambda: f"must be one of: {', '.join(map(str, arg))}",
        "const": lambda: f"must be {arg!r}",
        "minimum": lambda: f"must be at least {arg}",
        "maximum": lambda: f"must be at most {arg}",
        "exclusiveMinimum": lambda: f"must be greater than {arg}",
        "minItems": lambda: f"must have at least {arg} items",
        "maxItems": lambda: f"must have at most {arg} items",
        "uniqueItems": lambda: "must not contain duplicates",
        "minProperties": lambda: f"must have at least {arg} fields",
        "maxProperties": lambda: f"must have at most {arg} fields",
    }
    return [(path, messages.get(v, lambda: "is invalid")())]


def validate(validator: Draft202012Validator | None, data: Any, where: str) -> None:
    if validator is None:
        return
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        details: list[dict[str, str]] = []
        for err in errors:
            for path, message in _messages(err):
                if {"path": path, "message": message} not in details:
                    details.append({"path": path, "message": message})
        first = details[0]
        summary = f"{where} {first['path'] or '(root)'} {first['message']}" if first["path"] else f"{where} {first['message']}"
        raise ApiError(400, f"Invalid {summary}", "invalid_request", details=details)


def validate_body(route: Route, content_type: str, raw: bytes, body: Any) -> None:
    """The route's body schema, skipped for small bodies this route already found valid: the same
    bytes under the same content type always parse to the same body (a widget's visitors all send
    one body), and invalid bodies are never remembered."""
    if route.body_validator is None:
        return
    seen = content_type.encode() + b"\0" + raw
    if seen in route.valid_bodies:
        return
    validate(route.body_validator, body, "body")
    if len(raw) <= 1024:
        if len(route.valid_bodies) >= 4096:
            route.valid_bodies.clear()
        route.valid_bodies[seen] = True
