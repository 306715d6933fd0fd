"""A local Cal.com (API v2) for tests and sandbox mode, following ../shared/providers.md 4.1 and 4.3.

Test and sandbox API::

    fake = CalcomFake(now=lambda: some_utc_datetime)          # `now` is optional (real clock)
    user_id = fake.add_tenant("cal_live_...", timezone="America/New_York")
    et_id = fake.add_event_type("cal_live_...", title="Consultation", length_minutes=30,
                                availability={0: [("09:00", "17:00")]})   # weekday 0 = Monday
    server = await FakeServer(fake.app).start();  base_url = server.url + "/v2"
    fake.booking(uid) / fake.bookings_of(api_key)             # stored bookings, in the reply shape
    fake.slot_taken_status = 409                              # 400 by default (v2 code unconfirmed)

Behaviour: routes on the `cal-api-version` header (a missing or other version is refused here,
where the real service would silently answer with an older shape, so adapter drift shows up);
`Bearer <key>` must be one of the tenants' keys (event types always; slots and booking creation
take no key but refuse a bad one); a tenant sees and cancels only bookings on its own event types
(404 otherwise); slots come from a weekly availability in the host's zone, expressed in the
requested zone; a booked slot disappears, and booking it again gives `no_available_users_found_error`.
Cal.com sends no webhooks the gateway subscribes to, so this fake sends none.
"""
from __future__ import annotations

import datetime as dt
import itertools
import secrets
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from providers.fakes.server import make_app

VERSIONS = {"event-types": "2024-06-14", "slots": "2024-09-04", "bookings": "2024-08-13"}
SLOT_UNAVAILABLE = "no_available_users_found_error"
_UID_ALPHABET = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"  # short-uuid's base58
WEEKDAYS = {d: [("09:00", "17:00")] for d in range(5)}  # Monday to Friday, 9 to 5


class CalcomError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad_request(message: str) -> CalcomError:
    return CalcomError(400, "BadRequestException", message)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad_request(f"timeZone must be a valid IANA time zone, got {name!r}") from None


def _iso_utc(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class CalcomFake:
    slot_taken_status = 400

    def __init__(self, *, now: Callable[[], dt.datetime] | None = None) -> None:
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.users: dict[str, dict[str, Any]] = {}  # api key -> user
        self.event_types: dict[int, dict[str, Any]] = {}
        self._bookings: dict[str, dict[str, Any]] = {}  # uid -> stored booking (reply shape + owner)
        self._ids = itertools.count(1001)
        self.app = make_app()
        for method, path, handler in (
            ("GET", "/v2/event-types/{id}", self._get_event_type),
            ("GET", "/v2/slots", self._get_slots),
            ("POST", "/v2/bookings", self._create_booking),
            ("GET", "/v2/bookings/{uid}", self._get_booking),
            ("POST", "/v2/bookings/{uid}/cancel", self._cancel_booking),
        ):
            self.app.router.add_route(method, path, self._wrap(handler, path.split("/")[2]))

    # ---- Python API -------------------------------------------------------------------------------

    def add_tenant(self, api_key: str, *, name: str = "Host", timezone: str = "America/New_York") -> int:
        if not api_key.startswith("cal_"):
            raise ValueError("Cal.com keys start with cal_")
        _zone(timezone)
        user_id = next(self._ids)
        self.users[api_key] = {"id": user_id, "name": name, "timeZone": timezone}
        return user_id

    def add_event_type(self, api_key: str, *, title: str = "30 Min Meeting", slug: str | None = None,
                       length_minutes: int = 30,
                       availability: dict[int, list[tuple[str, str]]] | None = None) -> int:
        owner = self.users[api_key]
        et_id = next(self._ids)
        self.event_types[et_id] = {
            "id": et_id, "title": title, "slug": slug or title.lower().replace(" ", "-"),
            "lengthInMinutes": length_minutes, "description": "", "locations": [], "bookingFields": [],
            "hidden": False, "ownerId": owner["id"], "_key": api_key,
            "_availability": availability if availability is not None else WEEKDAYS,
        }
        return et_id

    def booking(self, uid: str) -> dict[str, Any] | None:
        stored = self._bookings.get(uid)
        return self._public(stored) if stored else None

    def bookings_of(self, api_key: str) -> list[dict[str, Any]]:
        return [self._public(b) for b in self._bookings.values() if b["_key"] == api_key]

    # ---- plumbing ---------------------------------------------------------------------------------

    def _wrap(self, handler: Callable[[web.Request], Any], resource: str) -> Callable[[web.Request], Any]:
        async def route(request: web.Request) -> web.Response:
            try:
                got = request.headers.get("cal-api-version")
                if got != VERSIONS[resource]:
                    raise _bad_request(f"fake Cal.com models {resource} only with cal-api-version "
                                       f"{VERSIONS[resource]}, got {got!r}")
                status, data = await handler(request)
                return web.json_response({"status": "success", "data": data}, status=status)
            except CalcomError as err:
                return web.json_response({
                    "status": "error", "timestamp": _iso_utc(self._now()), "path": request.path_qs,
                    "error": {"code": err.code, "message": err.message}}, status=err.status)
        return route

    def _caller(self, request: web.Request, *, required: bool) -> str | None:
        """The tenant key of the request; a bad key is always refused, a missing one when required."""
        header = request.headers.get("Authorization", "")
        if not header:
            if required:
                raise CalcomError(401, "UnauthorizedException", "No API key or access token provided")
            return None
        key = header[len("Bearer "):] if header.startswith("Bearer ") else ""
        if key not in self.users:
            raise CalcomError(401, "UnauthorizedException", "Invalid API Key")  # never echo the key
        return key

    def _event_type(self, raw: Any, api_key: str | None = None) -> dict[str, Any]:
        try:
            et_id = int(raw)
        except (TypeError, ValueError):
            raise _bad_request("eventTypeId must be an integer") from None
        et = self.event_types.get(et_id)
        if et is None or (api_key is not None and et["_key"] != api_key):
            raise CalcomError(404, "NotFoundException", f"Event type with id {et_id} not found")
        return et

    @staticmethod
    def _public(stored: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in stored.items() if not k.startswith("_")}

    # ---- availability -----------------------------------------------------------------------------

    def _busy(self, owner_key: str, start: dt.datetime, end: dt.datetime) -> bool:
        for b in self._bookings.values():
            if b["_key"] == owner_key and b["status"] in ("accepted", "pending"):
                if b["_start"] < end and start < b["_end"]:
                    return True
        return False

    def _free_slots(self, et: dict[str, Any], start: dt.datetime, end: dt.datetime,
                    length: int) -> list[tuple[dt.datetime, dt.datetime]]:
        """Slot starts in [start, end) from the weekly availability in the host's zone, minus the busy ones."""
        host_zone = ZoneInfo(self.users[et["_key"]]["timeZone"])
        step = dt.timedelta(minutes=length)
        start = max(start, self._now())
        out = []
        day = start.astimezone(host_zone).date() - dt.timedelta(days=1)
        while day <= end.astimezone(host_zone).date():
            for opens, closes in et["_availability"].get(day.weekday(), []):
                t = dt.datetime.combine(day, dt.time.fromisoformat(opens), host_zone)
                close = dt.datetime.combine(day, dt.time.fromisoformat(closes), host_zone)
                while t + step <= close:
                    if start <= t < end and not self._busy(et["_key"], t, t + step):
                        out.append((t, t + step))
                    t += step
            day += dt.timedelta(days=1)
        return out

    # ---- routes -----------------------------------------------------------------------------------

    async def _get_event_type(self, request: web.Request) -> tuple[int, Any]:
        key = self._caller(request, required=True)
        return 200, self._public(self._event_type(request.match_info["id"], key))

    def _bound(self, raw: str | None, name: str, zone: ZoneInfo, *, end: bool) -> dt.datetime:
        if not raw:
            raise _bad_request(f"{name} must be a valid ISO 8601 date string")
        try:
            if len(raw) == 10:  # a whole day in the requested zone; an end date includes that day
                day = dt.date.fromisoformat(raw) + dt.timedelta(days=1 if end else 0)
                return dt.datetime.combine(day, dt.time(), zone)
            value = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise _bad_request(f"{name} must be a valid ISO 8601 date string") from None
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)

    async def _get_slots(self, request: web.Request) -> tuple[int, Any]:
        self._caller(request, required=False)  # public for public event types
        q = request.query
        et = self._event_type(q.get("eventTypeId"))
        zone = _zone(q.get("timeZone", "UTC"))
        start = self._bound(q.get("start"), "start", zone, end=False)
        end = min(self._bound(q.get("end"), "end", zone, end=True), self._now() + dt.timedelta(days=365))
        if end < start:
            raise _bad_request("end must be after start")
        try:
            length = int(q.get("duration") or et["lengthInMinutes"])
        except ValueError:
            raise _bad_request("duration must be an integer") from None
        days: dict[str, list[dict[str, str]]] = {}
        for s, e in self._free_slots(et, start, end, length):
            local = s.astimezone(zone)
            item = {"start": local.isoformat(timespec="milliseconds")}
            if q.get("format") == "range":
                item["end"] = e.astimezone(zone).isoformat(timespec="milliseconds")
            days.setdefault(local.date().isoformat(), []).append(item)
        return 200, days

    async def _json_object(self, request: web.Request, *, optional: bool = False) -> dict[str, Any]:
        if optional and not await request.read():
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise _bad_request("Request body must be valid JSON") from None
        if not isinstance(body, dict):
            raise _bad_request("Request body must be a JSON object")
        return body

    async def _create_booking(self, request: web.Request) -> tuple[int, Any]:
        self._caller(request, required=False)  # auth is optional for booking a public event type
        body = await self._json_object(request)
        if not isinstance(body.get("eventTypeId"), int) or isinstance(body.get("eventTypeId"), bool):
            raise _bad_request("eventTypeId must be an integer number")
        attendee = body.get("attendee")
        if not isinstance(attendee, dict) or not isinstance(attendee.get("name"), str) or not attendee["name"]:
            raise _bad_request("attendee.name must be a non-empty string")
        email, phone = attendee.get("email"), attendee.get("phoneNumber")
        if not email and not phone:
            raise _bad_request("attendee must have an email or a phoneNumber")
        if email and (not isinstance(email, str) or "@" not in email):
            raise _bad_request("attendee.email must be an email")
        if not isinstance(attendee.get("timeZone"), str):
            raise _bad_request("attendee.timeZone must be a valid IANA time zone")
        _zone(attendee["timeZone"])
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict) or len(metadata) > 50:
            raise _bad_request("metadata must be an object with at most 50 keys")
        if not isinstance(body.get("start"), str):
            raise _bad_request("start must be a valid ISO 8601 date string")
        start = self._bound(body["start"], "start", ZoneInfo("UTC"), end=False)
        et = self._event_type(body["eventTypeId"])
        length = et["lengthInMinutes"]
        if start < self._now():
            raise _bad_request("Attempting to book a meeting in the past.")
        end = start + dt.timedelta(minutes=length)
        if (start, end) not in self._free_slots(et, start, end, length):
            raise CalcomError(self.slot_taken_status, "BadRequestException" if self.slot_taken_status == 400
                              else "ConflictException", SLOT_UNAVAILABLE)
        host = self.users[et["_key"]]
        uid = "".join(secrets.choice(_UID_ALPHABET) for _ in range(22))
        responses = {"name": attendee["name"], **({"email": email} if email else {}),
                     **({"attendeePhoneNumber": phone} if phone else {})}
        self._bookings[uid] = {
            "id": next(self._ids), "uid": uid, "title": f"{et['title']} between {host['name']} and {attendee['name']}",
            "description": "", "hosts": [{"id": host["id"], "name": host["name"], "timeZone": host["timeZone"]}],
            "status": "accepted", "start": _iso_utc(start), "end": _iso_utc(end), "duration": length,
            "eventTypeId": et["id"], "eventType": {"id": et["id"], "slug": et["slug"]}, "location": None,
            "meetingUrl": None, "absentHost": False, "guests": [], "bookingFieldsResponses": responses,
            "attendees": [{"name": attendee["name"], "email": email, "phoneNumber": phone,
                           "timeZone": attendee["timeZone"], "language": attendee.get("language", "en"),
                           "absent": False}],
            "metadata": body.get("metadata") or {}, "createdAt": _iso_utc(self._now()),
            "_key": et["_key"], "_start": start, "_end": end,
        }
        return 201, self._public(self._bookings[uid])

    def _owned_booking(self, request: web.Request) -> dict[str, Any]:
        key = self._caller(request, required=True)
        uid = request.match_info["uid"]
        stored = self._bookings.get(uid)
        if stored is None or stored["_key"] != key:  # another tenant's booking looks like no booking
            raise CalcomError(404, "NotFoundException", f"Booking with uid={uid} was not found in the database")
        return stored

    async def _get_booking(self, request: web.Request) -> tuple[int, Any]:
        return 200, self._public(self._owned_booking(request))

    async def _cancel_booking(self, request: web.Request) -> tuple[int, Any]:
        stored = self._owned_booking(request)
        body = await self._json_object(request, optional=True)
        reason = body.get("cancellationReason")
        if reason is not None and not isinstance(reason, str):
            raise _bad_request("cancellationReason must be a string")
        if stored["status"] == "cancelled":
            raise _bad_request("This booking has already been cancelled.")  # wording unconfirmed
        stored["status"] = "cancelled"
        stored["cancellationReason"] = reason
        return 200, self._public(stored)
