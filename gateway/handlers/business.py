"""Business settings of the caller's organization: description, opening hours, address.

The assistant reads these to answer callers, so they are checked beyond the JSON Schema: a
website must be a real http(s) URL, opening intervals must make sense, and the time zone must be
one the server can actually compute with. Every PUT answers with what was stored (read back in
the same statement), never with an echo of the input.
"""
from __future__ import annotations

import zoneinfo
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from gateway.context import Ctx
from gateway.errors import ApiError
from gateway.handlers import handler
from gateway.store import organizations
from policies import origins

# Hours entered before a time zone was ever chosen are read in this zone (the product's home
# market). A PUT without a time zone writes the effective one explicitly, so the stored hours
# never silently move if this default changes.
DEFAULT_TIMEZONE = "America/New_York"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_INFO_FIELDS = {"businessType": "business_type", "businessDescription": "business_description", "websiteUrl": "website_url"}
# Zone files that exist on disk but mean nothing portable for a business.
_NOT_A_PLACE = {"localtime", "Factory", "posixrules"}


def _invalid(path: str, message: str, *more: dict[str, str]) -> ApiError:
    details = [{"path": path, "message": message}, *more]
    return ApiError(400, f"Invalid body {path} {message}", "invalid_request", details=details)


async def _stored(ctx: Ctx, values: dict[str, Any] | None = None) -> Any:
    """Write ``values`` (column -> value, if any) and return the caller's organization row as stored."""
    row = await organizations.update_fields(ctx.db, ctx.org_id, values or {})
    if row is None:  # the organization was deleted under a live session
        raise ApiError(404, "Organization not found", "not_found")
    return row


# ---- business info -----------------------------------------------------------------------------

def _valid_host(host: str) -> bool:
    # The same rules as embed-token allow-lists, so the website can always be the widget's default
    # domain (policies/origins.py): real host names, localhost or IPv4; no wildcards.
    if "*" in host:
        return False
    try:
        origins.normalize_domain(host)
    except origins.InvalidDomain:
        return False
    return True


def website_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL with a host, or None when it is (it is stored as given)."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "must be a valid http(s) URL"
    if parts.scheme.lower() not in ("http", "https") or not url[len(parts.scheme):].startswith("://"):
        return "must start with http:// or https://"
    if "@" in parts.netloc:
        return "must not contain a user name or password"
    if not parts.hostname or not _valid_host(parts.hostname):
        return "must include a valid host name, e.g. https://example.com"
    return None


def _info(row: Any) -> dict[str, Any]:
    return {"businessType": row["business_type"], "businessDescription": row["business_description"],
            "websiteUrl": row["website_url"]}


@handler
async def get_info(ctx: Ctx) -> dict:
    return _info(await _stored(ctx))


@handler
async def put_info(ctx: Ctx) -> dict:
    """Only the fields present change; null clears a field."""
    url = ctx.body.get("websiteUrl")
    if url is not None:
        problem = website_problem(url)
        if problem:
            raise _invalid("websiteUrl", problem)
    values = {column: ctx.body[key] for key, column in _INFO_FIELDS.items() if key in ctx.body}
    return {"success": True, **_info(await _stored(ctx, values))}


# ---- business hours ----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_A_PLACE


def valid_timezone(name: str) -> bool:
    """An IANA zone the server's tz database knows (membership first: a key never reaches the filesystem unchecked)."""
    if name not in _known_zones():
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def hours_problems(hours: dict[str, list[dict[str, str]]]) -> list[dict[str, str]]:
    """Every ill-formed interval (the schema already checked the HH:MM format): open >= close, overlaps."""
    problems: list[dict[str, str]] = []
    for day in WEEKDAYS:
        spans = []
        for i, interval in enumerate(hours.get(day) or []):
            start, end = _minutes(interval["open"]), _minutes(interval["close"])
            if start >= end:
                problems.append({"path": f"businessHours.{day}[{i}]",
                                 "message": "open must be before close (use 24:00 for midnight)"})
            else:
                spans.append((start, end, i))
        spans.sort()
        for (_, prev_end, prev_i), (start, _, i) in zip(spans, spans[1:]):
            if start < prev_end:
                problems.append({"path": f"businessHours.{day}[{i}]",
                                 "message": f"overlaps businessHours.{day}[{prev_i}]"})
    return problems


def _hours(row: Any) -> dict[str, Any]:
    return {"businessHours": row["business_hours"], "timezone": row["timezone"] or DEFAULT_TIMEZONE}


@handler
async def get_hours(ctx: Ctx) -> dict:
    return _hours(await _stored(ctx))


@handler
async def put_hours(ctx: Ctx) -> dict:
    problems = hours_problems(ctx.body["businessHours"])
    tz = ctx.body.get("timezone")
    if tz is not None and not valid_timezone(tz):
        problems.append({"path": "timezone", "message": "must be an IANA time zone such as America/New_York"})
    if problems:
        raise _invalid(problems[0]["path"], problems[0]["message"], *problems[1:])
    values: dict[str, Any] = {"business_hours": ctx.body["businessHours"]}
    if tz is not None:
        values["timezone"] = tz
    async with ctx.db.acquire() as conn, conn.transaction():
        if tz is None:
            # Keep the stored zone; pin the default if none was ever chosen (see DEFAULT_TIMEZONE).
            values["timezone"] = await conn.fetchval(
                "SELECT coalesce(timezone, $2) FROM organizations WHERE id = $1 FOR UPDATE", ctx.org_id, DEFAULT_TIMEZONE)
        row = await organizations.update_fields(conn, ctx.org_id, values)
    if row is None:
        raise ApiError(404, "Organization not found", "not_found")
    return {"success": True, **_hours(row)}


# ---- business address --------------------------------------------------------------------------

@handler
async def get_address(ctx: Ctx) -> dict:
    return {"businessAddress": (await _stored(ctx))["business_address"]}


@handler
async def put_address(ctx: Ctx) -> dict:
    """The whole address is replaced (null removes it)."""
    address = ctx.body["businessAddress"]
    if address is not None:
        blank = [{"path": f"businessAddress.{key}", "message": "must not be blank"}
                 for key in ("street", "city") if not address[key].strip()]
        if blank:
            raise _invalid(blank[0]["path"], blank[0]["message"], *blank[1:])
    row = await _stored(ctx, {"business_address": address})
    return {"success": True, "businessAddress": row["business_address"]}
