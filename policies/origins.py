"""Hostname allow-lists for embed tokens, and matching a browser's Origin against them.

An allow-list entry is a hostname (``example.com``) or a subdomain wildcard (``*.example.com``).
Entries are normalised once, when stored: lower case, no trailing dot, IDN to punycode with the
UTS #46 mapping browsers use, so matching is a plain comparison of ASCII strings.

Decision: ``localhost`` and dotted-quad IPv4 literals (``127.0.0.1``) are accepted as exact
entries so an owner can try the widget on a development machine. They grant nothing a script
outside a browser could not already do (anyone can send any Origin header); the allow-list only
stops other websites' pages from using a token in visitors' browsers. IPv6 literals, and
wildcards over IP addresses or over a single label (``*.com``, ``*.localhost``), are refused.
Public suffixes (``*.co.uk``) are not detected: that needs the public suffix list.
"""
from __future__ import annotations

import functools

import ipaddress
import re
from urllib.parse import urlsplit

import idna

MAX_NAME = 253
MAX_LABEL = 63
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_DIGITS = re.compile(r"[0-9]+")


class InvalidDomain(ValueError):
    """The entry is not an acceptable hostname; the message says why, for the API client."""


def _check_ascii_host(host: str) -> str:
    """Validate an already lower-cased ASCII hostname or IPv4 literal; return it."""
    if not host:
        raise InvalidDomain("must not be empty")
    if len(host) > MAX_NAME:
        raise InvalidDomain(f"must be at most {MAX_NAME} characters")
    labels = host.split(".")
    if any(not label for label in labels):
        raise InvalidDomain("must not contain empty labels (..)")
    if _DIGITS.fullmatch(labels[-1]):
        # An all-numeric last label is never a DNS name: it is an IPv4 literal or nothing.
        try:
            # Strict dotted quad: ipaddress refuses leading zeros (octal ambiguity) and short forms.
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise InvalidDomain("is neither a hostname nor an IPv4 address") from None
    for label in labels:
        if len(label) > MAX_LABEL:
            raise InvalidDomain(f"labels must be at most {MAX_LABEL} characters")
        if not _LABEL.fullmatch(label):
            raise InvalidDomain("labels may hold only letters, digits and inner hyphens")
    return host


def _to_ascii(host: str) -> str:
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidDomain(f"is not a valid internationalised domain name ({exc})") from None


def _check_punycode(host: str) -> None:
    """An ``xn--`` label typed in ASCII must really be punycode for a valid name."""
    for label in host.split("."):
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise InvalidDomain("contains an invalid punycode (xn--) label") from None


def normalize_domain(entry: str) -> str:
    """One allow-list entry in stored form, or InvalidDomain."""
    value = entry.strip()
    if "://" in value:
        raise InvalidDomain("must be a hostname, not a URL: remove the scheme (https://)")
    if "/" in value or "?" in value or "#" in value:
        raise InvalidDomain("must be a hostname without a path, query or fragment")
    if "@" in value:
        raise InvalidDomain("must not contain user information (@)")
    if ":" in value or "[" in value:
        raise InvalidDomain("must not contain a port or an IPv6 address; ports are ignored when matching")
    if value == "*":
        raise InvalidDomain("a bare * would allow every website; list your own domains")
    wildcard = value.startswith("*.")
    host = value[2:] if wildcard else value
    if "*" in host:
        raise InvalidDomain("a wildcard is only allowed as a whole first label, as in *.example.com")
    host = _to_ascii(host)
    if host.endswith("."):
        host = host[:-1]  # the fully qualified form names the same host
    host = _check_ascii_host(host)
    _check_punycode(host)
    if not wildcard:
        if "." not in host and host != "localhost":
            raise InvalidDomain("must be a full domain name such as example.com")
        return host
    if _DIGITS.fullmatch(host.rsplit(".", 1)[-1]):
        raise InvalidDomain("a wildcard cannot cover IP addresses")
    if "." not in host:
        raise InvalidDomain("a wildcard needs at least two labels after *. (as in *.example.com)")
    if len(host) + 2 > MAX_NAME:
        raise InvalidDomain(f"must be at most {MAX_NAME} characters")
    return "*." + host


def normalize_domains(entries: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Stored form of a whole list, duplicates removed (first one kept), plus per-entry errors
    as ``{"path": "allowedDomains[i]", "message": ...}``."""
    out: list[str] = []
    errors: list[dict[str, str]] = []
    for i, entry in enumerate(entries):
        try:
            host = normalize_domain(entry)
        except InvalidDomain as exc:
            errors.append({"path": f"allowedDomains[{i}]", "message": str(exc)})
            continue
        if host not in out:
            out.append(host)
    return out, errors


def host_of_website(url: str | None) -> str | None:
    """The normalised host of an organization's website URL (with or without a scheme), or None."""
    if not url or not url.strip():
        return None
    url = url.strip()
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            return None
        return normalize_domain(host)
    except (ValueError, InvalidDomain):
        return None


@functools.lru_cache(maxsize=4096)  # a site's visitors all send the same few Origin values
def origin_host(origin: str | None) -> str | None:
    """The hostname of a browser Origin header (``scheme://host[:port]``), or None when the header
    is missing, ``null``, not http(s), or not a well-formed serialised origin."""
    if not origin or origin == "null" or len(origin) > 300 or not origin.isascii() or origin != origin.strip():
        return None
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
        return None
    netloc = parts.netloc
    if "@" in netloc or "[" in netloc or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if host.endswith("."):
        host = host[:-1]  # "example.com." is the same host as "example.com"
    try:
        return _check_ascii_host(host)
    except InvalidDomain:
        return None


def host_allowed(host: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """Exact hostname match, or ``*.example.com`` matching any deeper name (never the bare domain)."""
    for entry in allowed:
        if entry.startswith("*."):
            suffix = entry[1:]  # ".example.com": the dot stops "evilexample.com" from matching
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == entry:
            return True
    return False


def origin_allowed(origin: str | None, allowed: list[str] | tuple[str, ...]) -> bool:
    host = origin_host(origin)
    return host is not None and host_allowed(host, allowed)
