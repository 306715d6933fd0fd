"""JSON over HTTP for the adapters that have no official async SDK (VAPI, Cal.com).

Every call has a timeout. Calls that are safe to repeat (GET, PUT, DELETE, or a POST the caller
marks idempotent) are retried with exponential backoff on timeouts, connection errors, 429 and 5xx,
through aiohttp-retry. Every failure becomes a ProviderError naming the provider, with the
provider's own message and never our credentials.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

import aiohttp
from aiohttp_retry import ExponentialRetry, RetryClient

from providers.errors import ProviderError

SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = {429, 500, 502, 503, 504}


def _provider_message(body: Any, fallback: str) -> str:
    """The human message of an error reply, whatever shape the provider uses."""
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "title"):
            value = body.get(key)
            if isinstance(value, list):
                return "; ".join(str(v) for v in value)[:500]
            if isinstance(value, dict):
                return _provider_message(value, fallback)
            if value:
                return str(value)[:500]
    return fallback


class JsonApi:
    """One provider's JSON API. Create inside the running loop; ``await close()`` when done."""

    def __init__(self, provider: str, base_url: str, headers: Mapping[str, str], *, timeout: float = 10.0,
                 attempts: int = 3, backoff: float = 0.2) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep or send cookies
        )
        self._retry = ExponentialRetry(
            attempts=attempts, start_timeout=backoff, max_timeout=5.0, statuses=RETRY_STATUSES,
            exceptions={asyncio.TimeoutError, aiohttp.ClientConnectionError}, retry_all_server_errors=True,
        )
        self._no_retry = ExponentialRetry(attempts=1)
        self._client = RetryClient(client_session=self._session, retry_options=self._retry)

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                      data: Any = None, headers: Mapping[str, str] | None = None, idempotent: bool | None = None) -> Any:
        """The decoded JSON reply (None for an empty 2xx), or ProviderError."""
        repeatable = method.upper() in SAFE_METHODS if idempotent is None else idempotent
        options = self._retry if repeatable else self._no_retry
        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            async with self._client.request(method, url, json=json_body, params=params, data=data, headers=headers,
                                             retry_options=options) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            raise ProviderError(self.provider, "timed out", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(self.provider, f"could not connect ({type(exc).__name__})", retryable=True) from None
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                if 200 <= status < 300:
                    raise ProviderError(self.provider, "replied with something that is not JSON", status=status,
                                        retryable=True) from None
        if status >= 400:
            message = _provider_message(body, f"HTTP {status}")
            if status == 401 or status == 403:
                message = f"rejected our credentials or permissions ({message})"
            raise ProviderError(self.provider, message, status=status, retryable=status in RETRY_STATUSES,
                                code=str(body.get("code")) if isinstance(body, dict) and body.get("code") else None)
        return body
