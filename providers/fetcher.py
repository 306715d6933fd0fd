"""Fetching a tenant's website for onboarding's site analysis, without becoming an SSRF tool.

``await fetch_page(url)`` returns a ``FetchedPage(url, status, content_type, text, truncated)``
or raises ``ProviderError("website", reason)``. The rules:

- http and https only, ports 80 and 443 only, no ``user:pass@`` in the URL;
- every address a host name resolves to is checked when the connection is made (a custom aiohttp
  resolver, ``GuardedResolver``, wraps the real one, so the addresses checked are exactly the
  addresses connected to; redirects and DNS rebinding go through the same check). Refused:
  loopback, private, link-local, CGNAT (100.64/10), multicast, reserved, unspecified, IPv4-mapped
  / NAT64 / 6to4 / Teredo IPv6 forms of those, and cloud metadata addresses. A host with ANY
  refused address is refused as a whole (mixed answers are a rebinding tell);
- IP-literal hosts never reach a resolver in aiohttp, so they are checked before each request;
- redirects are followed by hand (at most ``max_redirects``), each hop re-checked from scratch;
- one deadline (``timeout`` seconds) covers the whole fetch including redirects;
- bodies over ``max_bytes`` are TRUNCATED, not refused (``truncated=True``): a big home page still
  has useful text in its first megabytes, and reading stops at the cap so memory stays bounded
  (the cap applies after decompression, so a gzip bomb is cut too);
- only text-like replies are returned (HTML, XHTML, XML, plain text, JSON); anything else is refused;
- nothing identifying is sent: no cookies (``DummyCookieJar``), no auth headers, no proxies or
  ``.netrc`` from the environment (``trust_env=False``).

Environment: none; there is no base URL or credential. Callers pass the tenant's URL.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from providers.errors import ProviderError

PROVIDER = "website"
ALLOWED_SCHEMES = frozenset({"http", "https"})
ALLOWED_PORTS = frozenset({80, 443})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TEXT_TYPES = ("text/", "application/xhtml+xml", "application/xml", "application/json", "application/ld+json")
USER_AGENT = "VoiceReceptionistSiteReader/1.0 (+onboarding site analysis)"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForbiddenAddress(Exception):
    """Raised by the resolver; deliberately not an OSError, so aiohttp lets it through unwrapped."""


@dataclass(frozen=True)
class FetchedPage:
    url: str  # the final URL, after redirects
    status: int
    content_type: str  # the media type without parameters, e.g. "text/html"
    text: str
    truncated: bool = False


def forbidden_reason(address: str | IPAddress) -> str | None:
    """Why this address may not be fetched from, or None if it is an ordinary public address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip in _METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 spellings that lead to an IPv4 address: judge the IPv4 address they carry.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"an IPv6 form of {embedded}, {inner}" if inner else None
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    )
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a carrier-grade NAT (100.64.0.0/10) address"
    if not ip.is_global:  # whatever else the standard library knows is not public (documentation ranges...)
        return "not a public address"
    return None


def _parse_allow(allow_addresses: Iterable[tuple[str, int]]) -> frozenset[tuple[IPAddress, int]]:
    return frozenset((ipaddress.ip_address(a), int(p)) for a, p in allow_addresses)


class GuardedResolver(AbstractResolver):
    """Wraps a real resolver and refuses any answer that contains a forbidden address.

    aiohttp connects only to what this returns, so the check and the connection cannot disagree.
    ``allow`` holds (address, port) pairs exempt from the rules: a TEST hook for a loopback server.
    """

    def __init__(self, inner: AbstractResolver | None = None, *,
                 allow: frozenset[tuple[IPAddress, int]] = frozenset()) -> None:
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()
        self._owns_inner = inner is None
        self._allow = allow

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        if not answers:
            raise OSError(f"{host} has no addresses")
        for answer in answers:
            ip = ipaddress.ip_address(answer["host"].split("%", 1)[0])  # drop an IPv6 zone id
            reason = forbidden_reason(ip)
            if (ip, port) in self._allow:
                continue
            if reason:
                raise ForbiddenAddress(f"{host} resolves to {ip}, {reason}")
            if port not in ALLOWED_PORTS:  # reachable only through a test port exemption
                raise ForbiddenAddress(f"{host}: port {port} is allowed only for exempted addresses")
        return answers

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()


def check_url(url: URL, allow: frozenset[tuple[IPAddress, int]] = frozenset()) -> None:
    """The rules that can be judged from the URL alone (scheme, port, userinfo, IP literals)."""
    if url.scheme not in ALLOWED_SCHEMES:
        raise ProviderError(PROVIDER, f"only http and https URLs can be fetched, not {url.scheme or 'no scheme'}")
    if not url.host:
        raise ProviderError(PROVIDER, "the URL has no host")
    if url.user is not None or url.password is not None:
        raise ProviderError(PROVIDER, "URLs with a user name or password are refused")
    port = url.port
    allowed_ports = ALLOWED_PORTS | {p for _, p in allow}
    if port not in allowed_ports:
        raise ProviderError(PROVIDER, f"only ports 80 and 443 can be fetched, not {port}")
    try:
        literal = ipaddress.ip_address(url.host.split("%", 1)[0])
    except ValueError:
        return  # a host name: the resolver judges its addresses at connect time
    reason = forbidden_reason(literal)
    if reason and (literal, port) not in allow:
        raise ProviderError(PROVIDER, f"refused to connect to {literal}: {reason}")
    if port not in ALLOWED_PORTS and (literal, port) not in allow:
        raise ProviderError(PROVIDER, f"only ports 80 and 443 can be fetched, not {port}")


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size < max_bytes:
        chunk = await resp.content.read(min(65536, max_bytes - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    # At the cap: one more byte tells whether anything was cut.
    more = await resp.content.read(1)
    return b"".join(chunks), bool(more)


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        return body.decode("utf-8", errors="replace")


async def _fetch(session: aiohttp.ClientSession, start: URL, allow: frozenset[tuple[IPAddress, int]],
                 max_bytes: int, max_redirects: int) -> FetchedPage:
    url = start
    for hop in range(max_redirects + 1):
        check_url(url, allow)
        async with session.get(url, allow_redirects=False) as resp:
            if resp.status in REDIRECT_STATUSES:
                location = resp.headers.get("Location")
                if not location:
                    raise ProviderError(PROVIDER, f"redirect ({resp.status}) without a Location", status=resp.status)
                try:
                    url = url.join(URL(location))
                except ValueError:
                    raise ProviderError(PROVIDER, "redirect to an invalid URL", status=resp.status) from None
                continue
            content_type = resp.content_type or "application/octet-stream"
            if not content_type.startswith(TEXT_TYPES):
                raise ProviderError(PROVIDER, f"the page is not text ({content_type})", status=resp.status)
            body, truncated = await _read_capped(resp, max_bytes)
            return FetchedPage(url=str(url), status=resp.status, content_type=content_type,
                               text=_decode(body, resp.charset), truncated=truncated)
    raise ProviderError(PROVIDER, f"too many redirects (more than {max_redirects})")


async def fetch_page(url: str, *, max_bytes: int = 2_000_000, timeout: float = 10.0, max_redirects: int = 5,
                     resolver: AbstractResolver | None = None,
                     allow_addresses: Iterable[tuple[str, int]] = ()) -> FetchedPage:
    """Fetch one page under the rules above, or raise ProviderError("website", reason).

    ``resolver`` replaces DNS (tests map names to addresses with it; the guard still applies), and
    ``allow_addresses`` exempts (address, port) pairs from the rules: both are TEST hooks only.
    """
    try:
        start = URL(url)
    except (ValueError, TypeError):
        raise ProviderError(PROVIDER, "not a valid URL") from None
    allow = _parse_allow(allow_addresses)
    check_url(start, allow)  # refuse early, before any session or resolver exists
    guard = GuardedResolver(resolver, allow=allow)
    # force_close: every hop opens a fresh connection, so every hop is resolved and checked anew.
    connector = aiohttp.TCPConnector(resolver=guard, use_dns_cache=False, force_close=True, limit=4)
    session = aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": USER_AGENT, "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"},
    )
    try:
        async with asyncio.timeout(timeout):  # one deadline for all hops together
            return await _fetch(session, start, allow, max_bytes, max_redirects)
    except ForbiddenAddress as exc:
        raise ProviderError(PROVIDER, f"refused to connect: {exc}") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise ProviderError(PROVIDER, f"timed out after {timeout:g} s", retryable=True) from None
    except aiohttp.ClientConnectorDNSError:
        raise ProviderError(PROVIDER, "could not resolve the host name", retryable=True) from None
    except aiohttp.InvalidURL:  # e.g. legacy numeric IPv4 forms (127.1, 2130706433), refused by aiohttp itself
        raise ProviderError(PROVIDER, "not a valid URL (hosts must be names or canonical IP addresses)") from None
    except aiohttp.ClientConnectorCertificateError:
        raise ProviderError(PROVIDER, "the site's TLS certificate is not valid") from None
    except aiohttp.ClientError as exc:
        raise ProviderError(PROVIDER, f"could not fetch the page ({type(exc).__name__})", retryable=True) from None
    finally:
        await session.close()
        await guard.close()
