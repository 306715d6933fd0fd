"""Pure unit tests of the embed-token hostname allow-lists and Origin matching (no database)."""
from __future__ import annotations

import pytest

from policies.origins import (
    InvalidDomain,
    host_allowed,
    host_of_website,
    normalize_domain,
    normalize_domains,
    origin_allowed,
    origin_host,
)


@pytest.mark.parametrize("entry, stored", [
    ("example.com", "example.com"),
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("  www.example.com  ", "www.example.com"),
    ("*.example.com", "*.example.com"),
    ("*.Example.com.", "*.example.com"),
    ("*.co.uk", "*.co.uk"),  # public suffixes are not detected (documented limitation)
    ("Bücher.de", "xn--bcher-kva.de"),
    ("*.bücher.de", "*.xn--bcher-kva.de"),
    ("faß.de", "xn--fa-hia.de"),  # UTS 46 non-transitional, as browsers do
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("ＥＸＡＭＰＬＥ．com", "example.com"),  # full-width forms and dot are mapped
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("a-b.example.com", "a-b.example.com"),
    ("localhost", "localhost"),
    ("127.0.0.1", "127.0.0.1"),
    ("192.168.1.20", "192.168.1.20"),
    ("a" * 63 + ".com", "a" * 63 + ".com"),
    (".".join(["a" * 61] * 4), ".".join(["a" * 61] * 4)),  # 247 characters
])
def test_accepted_entries_are_normalised(entry, stored):
    assert normalize_domain(entry) == stored


@pytest.mark.parametrize("entry, why", [
    ("", "empty"),
    ("   ", "empty"),
    ("https://example.com", "scheme"),
    ("http://example.com", "scheme"),
    ("example.com/widget", "path"),
    ("example.com?x=1", "query"),
    ("example.com#top", "fragment"),
    ("example.com:8443", "port"),
    ("user@example.com", "user information"),
    ("user:pw@example.com", "user information"),
    ("[::1]", "IPv6"),
    ("::1", "IPv6"),
    ("*", "every website"),
    ("*.com", "two labels"),
    ("*.localhost", "two labels"),
    ("*.", "empty"),
    ("*.*.example.com", "whole first label"),
    ("a.*.example.com", "whole first label"),
    ("*example.com", "whole first label"),
    ("ex*ample.com", "whole first label"),
    ("*.127.0.0.1", "IP"),
    ("a..example.com", "empty labels"),
    (".example.com", "empty labels"),
    ("example.com..", "empty labels"),
    ("-a.example.com", "hyphens"),
    ("a-.example.com", "hyphens"),
    ("a_b.example.com", "letters, digits"),
    ("exa mple.com", "letters, digits"),
    ("a\n.example.com", "letters, digits"),  # a regex "$" would let a newline through
    ("example.com\n.evil.net", "letters, digits"),
    ("a" * 64 + ".com", "63"),
    (".".join(["a" * 63] * 4), "253"),  # 255 characters
    ("*." + ".".join(["a" * 63] * 3 + ["a" * 60]), "253"),  # the host fits, the wildcard does not
    ("example", "full domain name"),
    ("xn--zz.com", "punycode"),
    ("1.2.3", "IPv4"),
    ("010.0.0.1", "IPv4"),  # leading zeros: octal in some parsers, refused
    ("256.1.1.1", "IPv4"),
    ("a.b.123", "IPv4"),  # an all-numeric last label is not a DNS name
    ("\u0300a.com", "internationalised"),  # a label may not start with a combining mark
    ("\u2603.com", "internationalised"),  # symbols are not allowed in IDNs
])
def test_refused_entries_say_why(entry, why):
    with pytest.raises(InvalidDomain) as err:
        normalize_domain(entry)
    assert why.lower() in str(err.value).lower()


def test_list_deduplicates_after_normalising_and_reports_each_bad_index():
    stored, errors = normalize_domains(["Example.com", "example.com.", "https://x.com", "*.EXAMPLE.com", "*", "bücher.de"])
    assert stored == ["example.com", "*.example.com", "xn--bcher-kva.de"]
    assert [e["path"] for e in errors] == ["allowedDomains[2]", "allowedDomains[4]"]
    assert all(e["message"] for e in errors)


@pytest.mark.parametrize("origin, host", [
    ("https://example.com", "example.com"),
    ("http://example.com", "example.com"),
    ("https://example.com:8443", "example.com"),
    ("http://localhost:3000", "localhost"),
    ("http://127.0.0.1:5500", "127.0.0.1"),
    ("HTTPS://WWW.Example.COM", "www.example.com"),
    ("https://example.com.", "example.com"),
    ("https://xn--bcher-kva.de", "xn--bcher-kva.de"),
])
def test_origin_host(origin, host):
    assert origin_host(origin) == host


@pytest.mark.parametrize("origin", [
    None, "", "null", "example.com", "ftp://example.com", "file:///tmp/x.html", "chrome-extension://abc",
    "https://example.com/", "https://example.com/path", "https://example.com?x", "https://example.com#x",
    "https://user@example.com", "https://example.com:port", "https://[::1]:8080", "https://",
    "https://bücher.de",  # browsers send the ASCII (punycode) form
    " https://example.com", "https://exa mple.com", "https://a..example.com", "https://" + "a" * 300 + ".com",
])
def test_malformed_or_opaque_origins_have_no_host(origin):
    assert origin_host(origin) is None


ALLOWED = ["example.com", "*.shop.example.net"]


@pytest.mark.parametrize("origin, ok", [
    ("https://example.com", True),
    ("http://example.com:8080", True),  # scheme http/https and any port
    ("https://www.example.com", False),  # exact entries match only themselves
    ("https://evilexample.com", False),
    ("https://example.com.evil.net", False),
    ("https://a.shop.example.net", True),
    ("https://a.b.shop.example.net", True),
    ("https://shop.example.net", False),  # a wildcard never matches the bare domain
    ("https://evilshop.example.net", False),
    ("https://shop.example.net.evil.io", False),
    ("https://example.net", False),
    ("ftp://example.com", False),
    ("null", False),
    (None, False),
])
def test_origin_matching(origin, ok):
    assert origin_allowed(origin, ALLOWED) is ok


def test_empty_allow_list_matches_nothing():
    assert not host_allowed("example.com", [])


@pytest.mark.parametrize("url, host", [
    ("https://www.acme-dental.com/contact?x=1", "www.acme-dental.com"),
    ("acme-dental.com", "acme-dental.com"),
    ("http://Bücher.de:8080/", "xn--bcher-kva.de"),
    ("", None),
    (None, None),
    ("ftp://acme.com", None),
    ("https://", None),
    ("not a url at all", None),
])
def test_host_of_website(url, host):
    assert host_of_website(url) == host
