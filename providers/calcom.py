"""Cal.com adapter (API v2), with the tenant's OWN API key.

Each organization that connects its calendar gives us its Cal.com key (``cal_live_...``) and an
event type id; the key is stored encrypted with the organization, so it is NOT an environment
variable. One ``CalcomClient`` is created per tenant key, inside the running event loop, and closed
with ``await client.close()``.

Environment (read by the wiring, not by this module):
- ``CALCOM_BASE_URL``: default ``https://api.cal.com/v2`` (DEFAULT_BASE_URL). A fake from
  providers.fakes.calcom serves the same paths under ``<fake url>/v2``.

Contract followed: ../shared/providers.md section 4.1. Every resource is pinned with its own
``cal-api-version`` header, because without it Cal.com silently answers with an older endpoint
version whose shapes differ. Replies are ``{"status": "success", "data": ...}``; errors are
``{"status": "error", "error": {"code", "message"}}`` and become ProviderError("calcom", ...).

Retries: reads (event type, slots, booking) and cancel are retried with backoff on timeouts, 429
and 5xx. Creating a booking is never retried automatically: a lost reply may hide a booking that
exists, so a timeout or 5xx on create raises ProviderError(code=OUTCOME_UNKNOWN, retryable=False)
and the caller must look before booking again. A 429 on create is retryable (nothing was done).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from providers.errors import ProviderError
from providers.http import JsonApi

PROVIDER = "calcom"
DEFAULT_BASE_URL = "https://api.cal.com/v2"
VERSION_EVENT_TYPES = "2024-06-14"
VERSION_SLOTS = "2024-09-04"
VERSION_BOOKINGS = "2024-08-13"

# ProviderError.code values this adapter sets, for callers to branch on.
SLOT_UNAVAILABLE = "no_available_users_found_error"  # Cal.com's own error string (taken slot / host busy)
OUTCOME_UNKNOWN = "outcome_unknown"  # create_booking got no clear answer; the booking may exist


@dataclasses.dataclass(frozen=True)
class EventType:
    id: int
    title: str
    slug: str
    length_minutes: int


@dataclasses.dataclass(frozen=True)
class Slot:
    start: dt.datetime  # aware, in the time zone that was asked for
    end: dt.datetime | None = None  # present when Cal.com gives ranges (we ask for them)


@dataclasses.dataclass(frozen=True)
class Booking:
    id: int
    uid: str  # what the other booking URLs take
    start: dt.datetime  # aware (UTC as Cal.com sends it)
    end: dt.datetime
    status: str  # accepted | pending | cancelled | rejected
    title: str = ""
    event_type_id: int | None = None
    cancellation_reason: str | None = None


# ---- parsers (pure; checked against tests/data/calcom/*.json) -------------------------------------

def _bad_shape(what: str) -> ProviderError:
    return ProviderError(PROVIDER, f"unexpected reply shape ({what})", retryable=False, code="malformed_reply")


def unwrap(body: Any) -> Any:
    """The ``data`` of a success envelope; an error envelope that came with a 2xx is still an error."""
    if not isinstance(body, dict):
        raise _bad_shape("not a JSON object")
    if body.get("status") == "error":
        err = body.get("error") if isinstance(body.get("error"), dict) else {}
        message = str(err.get("message") or "error")[:500]
        raise ProviderError(PROVIDER, message, code=_error_code(message, err.get("code")))
    if body.get("status") != "success" or "data" not in body:
        raise _bad_shape("no success envelope")
    return body["data"]


def _error_code(message: str, code: Any) -> str | None:
    if SLOT_UNAVAILABLE in message:
        return SLOT_UNAVAILABLE
    return str(code) if code else None


def _parse_time(value: Any, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise _bad_shape(f"{what} is not a string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _bad_shape(f"{what} is not an ISO time") from None
    if parsed.tzinfo is None:
        raise _bad_shape(f"{what} has no offset")
    return parsed


def parse_event_type(body: Any) -> EventType:
    data = unwrap(body)
    try:
        return EventType(id=int(data["id"]), title=str(data["title"]), slug=str(data["slug"]),
                         length_minutes=int(data["lengthInMinutes"]))
    except (KeyError, TypeError, ValueError):
        raise _bad_shape("event type") from None


def parse_slots(body: Any, timezone: str) -> list[Slot]:
    """``data`` maps a local date to its slots; the result is one flat, sorted list in ``timezone``."""
    data = unwrap(body)
    if not isinstance(data, dict):
        raise _bad_shape("slots are not keyed by date")
    zone = ZoneInfo(timezone)
    slots: list[Slot] = []
    for day in data.values():
        if not isinstance(day, list):
            raise _bad_shape("a day's slots are not a list")
        for item in day:
            if not isinstance(item, dict):
                raise _bad_shape("slot")
            start = _parse_time(item.get("start"), "slot start").astimezone(zone)
            end = _parse_time(item["end"], "slot end").astimezone(zone) if item.get("end") else None
            slots.append(Slot(start=start, end=end))
    slots.sort(key=lambda s: s.start)
    return slots


def parse_booking(body: Any) -> Booking:
    data = unwrap(body)
    if isinstance(data, list):  # a recurring event type answers with every occurrence; the first leads
        if not data:
            raise _bad_shape("empty booking list")
        data = data[0]
    if not isinstance(data, dict):
        raise _bad_shape("booking")
    try:
        event_type = data.get("eventType") if isinstance(data.get("eventType"), dict) else {}
        event_type_id = event_type.get("id", data.get("eventTypeId"))
        return Booking(
            id=int(data["id"]), uid=str(data["uid"]), start=_parse_time(data.get("start"), "booking start"),
            end=_parse_time(data.get("end"), "booking end"), status=str(data["status"]).lower(),
            title=str(data.get("title") or ""), event_type_id=int(event_type_id) if event_type_id is not None else None,
            cancellation_reason=data.get("cancellationReason") or None,
        )
    except (KeyError, TypeError, ValueError):
        raise _bad_shape("booking") from None


# ---- request helpers ---------------------------------------------------------------------------------

def _utc_iso(value: dt.datetime, what: str, *, millis: int = 0) -> str:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _range_bound(value: dt.date | dt.datetime, timezone: str, *, end: bool) -> str:
    """An exact UTC instant. A date means that whole day in ``timezone``: we turn it into instants
    ourselves rather than rely on how Cal.com reads a bare ``YYYY-MM-DD`` end (unconfirmed)."""
    if isinstance(value, dt.datetime):
        return _utc_iso(value, "end" if end else "start")
    midnight = dt.datetime.combine(value + dt.timedelta(days=1 if end else 0), dt.time(), ZoneInfo(timezone))
    if not end:
        return _utc_iso(midnight, "start")
    # the day's last millisecond: the day is covered whether Cal.com treats `end` as inclusive or not
    return _utc_iso(midnight - dt.timedelta(milliseconds=1), "end", millis=999)


def _check_zone(timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None


class CalcomClient:
    """One tenant's Cal.com account. Construct inside the running loop; ``await close()`` when done."""

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0,
                 attempts: int = 3, backoff: float = 0.2) -> None:
        if not api_key:
            raise ValueError("a Cal.com API key is required")
        self._key = api_key
        self._api = JsonApi(PROVIDER, base_url, {"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                            timeout=timeout, attempts=attempts, backoff=backoff)

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, method: str, path: str, version: str, **kw: Any) -> Any:
        try:
            return await self._api.request(method, path, headers={"cal-api-version": version}, **kw)
        except ProviderError as exc:
            # JsonApi knows the message, not Cal.com's nested code; refine it, and make sure a
            # provider that echoes the key back can never put it in our logs.
            message = exc.message.replace(self._key, "[redacted]")
            raise ProviderError(PROVIDER, message, status=exc.status, retryable=exc.retryable,
                                code=_error_code(message, exc.code)) from None

    async def verify(self, event_type_id: int) -> EventType:
        """Checks the key and that the event type is this key's, in one call (401 / 404 otherwise)."""
        body = await self._call("GET", f"event-types/{int(event_type_id)}", VERSION_EVENT_TYPES)
        return parse_event_type(body)

    async def list_slots(self, event_type_id: int, start: dt.date | dt.datetime, end: dt.date | dt.datetime,
                         timezone: str, *, duration_minutes: int | None = None) -> list[Slot]:
        """Free slots from ``start`` to ``end`` (dates are whole days, inclusive, in ``timezone``)."""
        _check_zone(timezone)
        params: dict[str, str] = {
            "eventTypeId": str(int(event_type_id)), "timeZone": timezone, "format": "range",
            "start": _range_bound(start, timezone, end=False), "end": _range_bound(end, timezone, end=True)}
        if duration_minutes:
            params["duration"] = str(int(duration_minutes))
        body = await self._call("GET", "slots", VERSION_SLOTS, params=params)
        return parse_slots(body, timezone)

    async def create_booking(self, event_type_id: int, start: dt.datetime, *, name: str, email: str | None,
                             timezone: str, phone: str | None = None,
                             metadata: dict[str, str] | None = None) -> Booking:
        """Books ``start`` (aware) for the attendee. Not retried: see the module docstring."""
        _check_zone(timezone)
        if not (email or phone):
            raise ValueError("the attendee needs an email or a phone number")
        attendee: dict[str, Any] = {"name": name, "timeZone": timezone}
        if email:
            attendee["email"] = email
        if phone:
            attendee["phoneNumber"] = phone
        payload: dict[str, Any] = {"start": _utc_iso(start, "start"), "eventTypeId": int(event_type_id),
                                   "attendee": attendee}
        if metadata:
            payload["metadata"] = {str(k): str(v) for k, v in metadata.items()}
        try:
            body = await self._call("POST", "bookings", VERSION_BOOKINGS, json_body=payload, idempotent=False)
            return parse_booking(body)
        except ProviderError as exc:
            if exc.status is not None and 400 <= exc.status < 500:  # a clear refusal: nothing was booked
                raise
            # A timeout, dropped connection, 5xx or unreadable 2xx: the booking may exist.
            raise ProviderError(PROVIDER, f"{exc.message}; the booking may or may not have been made",
                                status=exc.status, retryable=False, code=OUTCOME_UNKNOWN) from None

    async def get_booking(self, uid: str) -> Booking:
        body = await self._call("GET", f"bookings/{_uid(uid)}", VERSION_BOOKINGS)
        return parse_booking(body)

    async def cancel_booking(self, uid: str, reason: str | None = None) -> Booking:
        """Cancels; cancelling an already cancelled booking returns it (so a retried cancel is safe)."""
        payload = {"cancellationReason": reason} if reason else {}
        try:
            body = await self._call("POST", f"bookings/{_uid(uid)}/cancel", VERSION_BOOKINGS, json_body=payload,
                                    idempotent=True)
        except ProviderError as exc:
            if exc.status != 400:
                raise
            # Cal.com refuses to cancel twice; if our earlier attempt went through, that is success.
            try:
                current = await self.get_booking(uid)
            except ProviderError:
                raise exc from None
            if current.status != "cancelled":
                raise exc
            return current
        return parse_booking(body)


def _uid(uid: str) -> str:
    # uids go into the URL path: refuse anything that could change the path.
    if not uid or not all(c.isalnum() or c in "-_" for c in uid):
        raise ValueError("not a Cal.com booking uid")
    return uid
