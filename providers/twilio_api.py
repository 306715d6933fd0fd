"""Twilio adapter: numbers, SMS, A2P 10DLC registration, and webhook signature validation.

Built on the official ``twilio`` SDK and its asyncio HTTP client (providers.md 2.10). Construct
``TwilioApi`` inside the running event loop (the SDK's aiohttp session needs one) and ``await
close()`` on shutdown. Every failure is a ``ProviderError("twilio", ...)``; voice access tokens live
in providers/twilio_tokens.py.

Environment variables the wiring should read:
- ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``: REST credentials (HTTP Basic) and the key that
  signs Twilio's webhooks to us.
- ``TWILIO_BASE_URL``: optional; when set, every Twilio domain (api, messaging, trusthub, numbers)
  goes to this one base URL (the local fake). Default: unset, i.e. each domain's own host,
  ``https://api.twilio.com``, ``https://messaging.twilio.com``, ``https://trusthub.twilio.com``.
- ``PUBLIC_BASE_URL``: the gateway's public origin (``https://app.example.com``); webhook
  signatures are checked against it, never against the URL the process sees behind a proxy.

Timeouts and retries: the SDK's async client stores its timeout but never applies it, and its
``max_retries`` would retry every method, sends and purchases included. So ``_HttpClient`` passes
our timeout to every attempt and retries only GETs (on timeouts, connection errors, 429 and 5xx),
with exponential backoff through aiohttp-retry, the library the SDK itself uses for this.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Mapping, TypeVar

import aiohttp
from aiohttp_retry import ExponentialRetry, RetryClient
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.base.version import Version
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as SdkResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from providers.errors import ProviderError

PROVIDER = "twilio"
RETRY_STATUSES = {429, 500, 502, 503, 504}
T = TypeVar("T")


# ---- typed results (what callers need; the SDK instances stay inside this module) -----------------

@dataclass(frozen=True)
class AvailableNumber:
    phone_number: str
    friendly_name: str | None
    locality: str | None
    region: str | None
    postal_code: str | None
    iso_country: str | None
    voice: bool
    sms: bool
    mms: bool


@dataclass(frozen=True)
class IncomingNumber:
    sid: str
    phone_number: str
    friendly_name: str | None
    voice_url: str | None
    sms_url: str | None
    status_callback: str | None
    status: str | None


@dataclass(frozen=True)
class Message:
    sid: str
    status: str
    to: str | None
    from_: str | None
    body: str | None
    messaging_service_sid: str | None
    num_segments: int | None
    direction: str | None
    error_code: int | None
    error_message: str | None
    date_created: datetime | None


@dataclass(frozen=True)
class Bundle:
    """A TrustHub customer profile or trust product (both are ``BU`` sids)."""
    sid: str
    friendly_name: str | None
    status: str  # draft, pending-review, in-review, twilio-rejected, twilio-approved
    email: str | None
    policy_sid: str | None


@dataclass(frozen=True)
class BrandRegistration:
    sid: str
    status: str  # PENDING, APPROVED, FAILED, IN_REVIEW, DELETION_PENDING, DELETION_FAILED, SUSPENDED
    brand_type: str | None
    tcr_id: str | None
    failure_reason: str | None
    brand_score: int | None
    identity_status: str | None
    errors: tuple[Any, ...]


@dataclass(frozen=True)
class MessagingService:
    sid: str
    friendly_name: str | None
    inbound_request_url: str | None
    status_callback: str | None


@dataclass(frozen=True)
class Campaign:
    sid: str
    messaging_service_sid: str | None
    brand_registration_sid: str | None
    campaign_status: str | None  # free text: IN_PROGRESS, VERIFIED, FAILED and maybe others
    campaign_id: str | None
    us_app_to_person_usecase: str | None
    errors: tuple[Any, ...]


# ---- parsers from SDK instances (tests feed them SDK instances built from tests/data/twilio) -------

def _required(inst: Any, name: str) -> Any:
    value = getattr(inst, name, None)
    if value in (None, ""):
        raise ProviderError(PROVIDER, f"reply is missing {name!r}", retryable=False)
    return value


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def parse_available_number(inst: Any) -> AvailableNumber:
    caps = getattr(inst, "capabilities", None) or {}
    return AvailableNumber(  # Twilio spells these keys voice, SMS, MMS (2.2)
        phone_number=_required(inst, "phone_number"), friendly_name=inst.friendly_name, locality=inst.locality,
        region=inst.region, postal_code=inst.postal_code, iso_country=inst.iso_country,
        voice=bool(caps.get("voice")), sms=bool(caps.get("SMS")), mms=bool(caps.get("MMS")))


def parse_incoming_number(inst: Any) -> IncomingNumber:
    return IncomingNumber(
        sid=_required(inst, "sid"), phone_number=_required(inst, "phone_number"), friendly_name=inst.friendly_name,
        voice_url=inst.voice_url or None, sms_url=inst.sms_url or None,
        status_callback=inst.status_callback or None, status=inst.status)


def parse_message(inst: Any) -> Message:
    return Message(
        sid=_required(inst, "sid"), status=_required(inst, "status"), to=inst.to, from_=inst.from_, body=inst.body,
        messaging_service_sid=inst.messaging_service_sid, num_segments=_int(inst.num_segments),
        direction=inst.direction, error_code=_int(inst.error_code), error_message=inst.error_message,
        date_created=inst.date_created)


def parse_bundle(inst: Any) -> Bundle:
    return Bundle(sid=_required(inst, "sid"), friendly_name=inst.friendly_name, status=_required(inst, "status"),
                  email=inst.email, policy_sid=inst.policy_sid)


def parse_brand(inst: Any) -> BrandRegistration:
    return BrandRegistration(
        sid=_required(inst, "sid"), status=_required(inst, "status"), brand_type=inst.brand_type,
        tcr_id=inst.tcr_id, failure_reason=inst.failure_reason, brand_score=_int(inst.brand_score),
        identity_status=inst.identity_status, errors=tuple(inst.errors or ()))


def parse_service(inst: Any) -> MessagingService:
    return MessagingService(sid=_required(inst, "sid"), friendly_name=inst.friendly_name,
                            inbound_request_url=inst.inbound_request_url, status_callback=inst.status_callback)


def parse_campaign(inst: Any) -> Campaign:
    return Campaign(
        sid=_required(inst, "sid"), messaging_service_sid=inst.messaging_service_sid,
        brand_registration_sid=inst.brand_registration_sid, campaign_status=inst.campaign_status,
        campaign_id=inst.campaign_id, us_app_to_person_usecase=inst.us_app_to_person_usecase,
        errors=tuple(inst.errors or ()))


# ---- webhook signatures -----------------------------------------------------------------------------

def public_url(public_base_url: str, raw_path: str) -> str:
    """The URL Twilio called: our configured public origin plus the path and query exactly as sent
    (aiohttp's ``request.raw_path``); the process behind a proxy sees another host and scheme."""
    return public_base_url.rstrip("/") + raw_path


def validate_request(auth_token: str, public_url: str, params: Mapping[str, Any], signature: str | None) -> bool:
    """Whether ``X-Twilio-Signature`` matches: HMAC-SHA1 with the auth token over the public URL and
    the sorted POST params (providers.md 2.5), via the SDK's RequestValidator. ``params`` should be
    the aiohttp MultiDict from ``await request.post()`` so repeated names count."""
    if not auth_token or not signature:
        return False
    return RequestValidator(auth_token).validate(public_url, params, signature)


# ---- transport -----------------------------------------------------------------------------------------

class _Sessions:
    """What the SDK's client calls ``session``: GETs go through aiohttp-retry, everything else is sent
    once. (aiohttp-retry's ``methods`` option only guards status retries; it retries exceptions for
    any method, and a timed-out POST may still have been sent or bought.)"""

    def __init__(self, retry: ExponentialRetry) -> None:
        self._plain = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._reads = RetryClient(client_session=self._plain, retry_options=retry)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return (self._reads if method.upper() == "GET" else self._plain).request(method, url, **kwargs)

    async def close(self) -> None:
        await self._plain.close()


class _HttpClient(AsyncTwilioHttpClient):
    """The SDK's asyncio client with a timeout on every attempt and retries for GETs only."""

    def __init__(self, timeout: float, attempts: int, backoff: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)  # no session yet: we make it below
        self.session = _Sessions(ExponentialRetry(
            attempts=attempts, start_timeout=backoff, max_timeout=5.0, statuses=RETRY_STATUSES,
            exceptions={asyncio.TimeoutError, aiohttp.ClientConnectionError}))

    async def request(self, method: str, url: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        # The generated API methods pass timeout=None, which aiohttp takes as "no timeout at all".
        return await super().request(method, url, *args, timeout=timeout or self.timeout, **kwargs)


def _error(exc: BaseException) -> ProviderError:
    if type(exc) is TwilioException and len(exc.args) > 1 and isinstance(exc.args[1], SdkResponse):
        # a list page that was not a 200: the SDK wraps the raw reply instead of parsing its error body
        exc = Version.exception("GET", "", exc.args[1], "Unable to fetch page")
    if isinstance(exc, TwilioRestException):
        status, code = exc.status, exc.code
        message = exc.msg.split(": ", 1)[-1] if exc.msg else f"HTTP {status}"  # drop the SDK's "Unable to ..." prefix
    elif isinstance(exc, TwilioServiceException):
        status, code, message = exc.status, exc.code, exc.detail or exc.title or f"HTTP {exc.status}"
    elif isinstance(exc, asyncio.TimeoutError):
        return ProviderError(PROVIDER, "timed out", retryable=True)
    elif isinstance(exc, aiohttp.ClientError):
        return ProviderError(PROVIDER, f"could not connect ({type(exc).__name__})", retryable=True)
    elif isinstance(exc, json.JSONDecodeError):
        return ProviderError(PROVIDER, "replied with something that is not JSON", retryable=True)
    else:  # TwilioException from a page with no records key, or a parser's missing field
        return ProviderError(PROVIDER, f"unexpected reply ({exc})", retryable=False)
    if status in (401, 403):
        message = f"rejected our credentials or permissions ({message})"
    return ProviderError(PROVIDER, str(message)[:500], status=status, retryable=status in RETRY_STATUSES,
                         code=str(code) if code is not None else None)


class TwilioApi:
    """One Twilio account. Construct inside the running loop; ``await close()`` when done."""

    def __init__(self, account_sid: str, auth_token: str, *, base_url: str | None = None, timeout: float = 10.0,
                 attempts: int = 3, backoff: float = 0.2) -> None:
        self.account_sid = account_sid
        self._http = _HttpClient(timeout, attempts, backoff)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        if base_url:  # the SDK has no host option: each domain object's base_url is the seam (2.10)
            for domain in (self._client.api, self._client.messaging, self._client.trusthub, self._client.numbers):
                domain.base_url = base_url.rstrip("/")

    async def close(self) -> None:
        await self._http.close()

    async def _call(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except ProviderError:
            raise
        except (TwilioException, asyncio.TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
            raise _error(exc) from None

    async def _one(self, coro: Awaitable[Any], parse: Any) -> Any:
        inst = await self._call(coro)
        try:
            return parse(inst)
        except (AttributeError, TypeError) as exc:  # a 2xx whose JSON is not the expected object
            raise ProviderError(PROVIDER, f"unexpected reply ({type(exc).__name__})") from None

    async def _many(self, coro: Awaitable[list[Any]], parse: Any) -> list[Any]:
        items = await self._call(coro)
        try:
            return [parse(i) for i in items]
        except (AttributeError, TypeError) as exc:
            raise ProviderError(PROVIDER, f"unexpected reply ({type(exc).__name__})") from None

    # -- numbers --

    async def search_local_numbers(self, area_code: int | str, *, country: str = "US", limit: int = 20,
                                   sms_enabled: bool | None = None, voice_enabled: bool | None = None) -> list[AvailableNumber]:
        extra = {k: v for k, v in (("sms_enabled", sms_enabled), ("voice_enabled", voice_enabled)) if v is not None}
        lister = self._client.available_phone_numbers(country).local
        return await self._many(lister.list_async(area_code=int(area_code), limit=limit, **extra), parse_available_number)

    async def buy_number(self, phone_number: str, *, voice_url: str | None = None, sms_url: str | None = None,
                         status_callback: str | None = None, friendly_name: str | None = None) -> IncomingNumber:
        """Buys ``phone_number`` (from a search) and points its webhooks at us. Never retried: a repeat
        could buy twice; on a timeout, look the number up with ``list_numbers`` before trying again."""
        kw = _set(voice_url=voice_url, voice_method="POST" if voice_url else None, sms_url=sms_url,
                  sms_method="POST" if sms_url else None, status_callback=status_callback,
                  status_callback_method="POST" if status_callback else None, friendly_name=friendly_name)
        return await self._one(self._client.incoming_phone_numbers.create_async(phone_number=phone_number, **kw),
                               parse_incoming_number)

    async def update_number(self, sid: str, *, voice_url: str | None = None, sms_url: str | None = None,
                            status_callback: str | None = None, friendly_name: str | None = None) -> IncomingNumber:
        kw = _set(voice_url=voice_url, sms_url=sms_url, status_callback=status_callback, friendly_name=friendly_name)
        return await self._one(self._client.incoming_phone_numbers(sid).update_async(**kw), parse_incoming_number)

    async def fetch_number(self, sid: str) -> IncomingNumber:
        return await self._one(self._client.incoming_phone_numbers(sid).fetch_async(), parse_incoming_number)

    async def list_numbers(self, *, phone_number: str | None = None, limit: int = 200,
                           page_size: int = 50) -> list[IncomingNumber]:
        kw = _set(phone_number=phone_number)
        return await self._many(self._client.incoming_phone_numbers.list_async(limit=limit, page_size=page_size, **kw),
                                parse_incoming_number)

    async def release_number(self, sid: str) -> None:
        await self._call(self._client.incoming_phone_numbers(sid).delete_async())

    # -- SMS --

    async def send_sms(self, to: str, body: str, *, from_: str | None = None, messaging_service_sid: str | None = None,
                       status_callback: str | None = None) -> Message:
        """Sends from a number or a Messaging Service (exactly one). Never retried: a timed-out send
        may have gone out, and a repeat would text the person twice."""
        if bool(from_) == bool(messaging_service_sid):
            raise ValueError("give exactly one of from_ and messaging_service_sid")
        kw = _set(from_=from_, messaging_service_sid=messaging_service_sid, status_callback=status_callback)
        return await self._one(self._client.messages.create_async(to=to, body=body, **kw), parse_message)

    async def fetch_message(self, sid: str) -> Message:
        return await self._one(self._client.messages(sid).fetch_async(), parse_message)

    # -- A2P 10DLC (providers.md 2.9) --

    async def create_customer_profile(self, friendly_name: str, email: str, policy_sid: str, *,
                                      status_callback: str | None = None) -> Bundle:
        kw = _set(status_callback=status_callback)
        return await self._one(self._client.trusthub.v1.customer_profiles.create_async(
            friendly_name=friendly_name, email=email, policy_sid=policy_sid, **kw), parse_bundle)

    async def fetch_customer_profile(self, sid: str) -> Bundle:
        return await self._one(self._client.trusthub.v1.customer_profiles(sid).fetch_async(), parse_bundle)

    async def create_trust_product(self, friendly_name: str, email: str, policy_sid: str, *,
                                   status_callback: str | None = None) -> Bundle:
        kw = _set(status_callback=status_callback)
        return await self._one(self._client.trusthub.v1.trust_products.create_async(
            friendly_name=friendly_name, email=email, policy_sid=policy_sid, **kw), parse_bundle)

    async def fetch_trust_product(self, sid: str) -> Bundle:
        return await self._one(self._client.trusthub.v1.trust_products(sid).fetch_async(), parse_bundle)

    async def create_brand_registration(self, customer_profile_sid: str, a2p_profile_sid: str, *,
                                        brand_type: str = "STANDARD", mock: bool = False) -> BrandRegistration:
        return await self._one(self._client.messaging.v1.brand_registrations.create_async(
            customer_profile_bundle_sid=customer_profile_sid, a2p_profile_bundle_sid=a2p_profile_sid,
            brand_type=brand_type, mock=mock), parse_brand)

    async def fetch_brand_registration(self, sid: str) -> BrandRegistration:
        return await self._one(self._client.messaging.v1.brand_registrations(sid).fetch_async(), parse_brand)

    async def list_brand_registrations(self, *, limit: int = 100, page_size: int = 50) -> list[BrandRegistration]:
        return await self._many(self._client.messaging.v1.brand_registrations.list_async(limit=limit,
                                                                                         page_size=page_size),
                                parse_brand)

    async def create_messaging_service(self, friendly_name: str, *, inbound_request_url: str | None = None,
                                       status_callback: str | None = None,
                                       use_inbound_webhook_on_number: bool | None = None) -> MessagingService:
        kw = _set(inbound_request_url=inbound_request_url, status_callback=status_callback,
                  use_inbound_webhook_on_number=use_inbound_webhook_on_number)
        return await self._one(self._client.messaging.v1.services.create_async(friendly_name=friendly_name, **kw),
                               parse_service)

    async def fetch_messaging_service(self, sid: str) -> MessagingService:
        return await self._one(self._client.messaging.v1.services(sid).fetch_async(), parse_service)

    async def add_number_to_service(self, service_sid: str, phone_number_sid: str) -> None:
        await self._call(self._client.messaging.v1.services(service_sid).phone_numbers.create_async(
            phone_number_sid=phone_number_sid))

    async def create_us_a2p_campaign(self, service_sid: str, brand_registration_sid: str, *, description: str,
                                     message_flow: str, message_samples: list[str], usecase: str = "MIXED",
                                     has_embedded_links: bool = False, has_embedded_phone: bool = False,
                                     **optional: Any) -> Campaign:
        """``optional``: the SDK's snake_case names, e.g. opt_in_message, help_keywords, privacy_policy_url."""
        return await self._one(self._client.messaging.v1.services(service_sid).us_app_to_person.create_async(
            brand_registration_sid=brand_registration_sid, description=description, message_flow=message_flow,
            message_samples=list(message_samples), us_app_to_person_usecase=usecase,
            has_embedded_links=has_embedded_links, has_embedded_phone=has_embedded_phone, **optional), parse_campaign)

    async def fetch_us_a2p_campaign(self, service_sid: str, sid: str) -> Campaign:
        return await self._one(self._client.messaging.v1.services(service_sid).us_app_to_person(sid).fetch_async(),
                               parse_campaign)


def _set(**kw: Any) -> dict[str, Any]:
    """Only the arguments the caller gave: the SDK leaves out its ``unset`` defaults, not None."""
    return {k: v for k, v in kw.items() if v is not None}
