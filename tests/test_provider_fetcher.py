"""The website fetcher's SSRF rules, proved without any outbound connection.

Names are resolved by ``MapResolver`` (a fake DNS: test names to chosen addresses; unknown names
fail, so real DNS is never asked), and ``connections`` spies on aiohttp's socket opening: every
refusal asserts it stayed empty, and the allowed cases prove the spy does see real connections.
The only server ever connected to is a local aiohttp app on 127.0.0.1, reachable only because the
test passes ``allow_addresses=[("127.0.0.1", port)]``.
"""
from __future__ import annotations

import asyncio
import socket

import aiohappyeyeballs
import pytest
from aiohttp import web

from providers.errors import ProviderError
from providers.fakes.server import FakeServer, make_app
from providers.fetcher import GuardedResolver, fetch_page, forbidden_reason


class MapResolver:
    """Fake DNS for tests: a name maps to a list of addresses; calls are recorded."""

    def __init__(self, mapping: dict[str, list[str]]) -> None:
        self.mapping = mapping
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict]:
        self.calls.append((host, port))
        if host not in self.mapping:
            raise OSError(f"no such test host {host}")
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.mapping[host]]

    async def close(self) -> None:
        pass


@pytest.fixture
def connections(monkeypatch):
    """Every socket connection aiohttp tries to open, as (host, port)."""
    seen: list[tuple[str, int]] = []
    real = aiohappyeyeballs.start_connection

    async def spy(addr_infos, *args, **kwargs):
        seen.extend((info[4][0], info[4][1]) for info in addr_infos)
        return await real(addr_infos, *args, **kwargs)

    monkeypatch.setattr(aiohappyeyeballs, "start_connection", spy)
    return seen


@pytest.fixture
async def site():
    app = make_app()
    seen_headers: list[dict[str, str]] = []

    async def page(request: web.Request) -> web.Response:
        seen_headers.append(dict(request.headers))
        return web.Response(text="<html><body>Ada Dental, open 9 to 5</body></html>", content_type="text/html",
                            headers={"Set-Cookie": "session=abc; Path=/"})

    async def redirect(request: web.Request) -> web.Response:
        seen_headers.append(dict(request.headers))
        raise web.HTTPFound(request.query["to"], headers={"Set-Cookie": "tracker=1; Path=/"})

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return web.Response(text="end of chain", content_type="text/plain")
        raise web.HTTPFound(f"/chain/{left - 1}")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="a" * 3_000_000, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n", content_type="image/png")

    app.router.add_get("/page", page)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/image", image)
    server = await FakeServer(app).start()
    server.seen_headers = seen_headers  # type: ignore[attr-defined]
    yield server
    await server.stop()


def local(site, **names: list[str]):
    """fetch_page options that reach the local site as http://site.test:<port>, plus extra names."""
    return dict(resolver=MapResolver({"site.test": ["127.0.0.1"], **names}),
                allow_addresses=[("127.0.0.1", site.port)])


FORBIDDEN = [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"), ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("::ffff:127.0.0.1", "IPv6 form of 127.0.0.1"), ("::ffff:10.0.0.1", "IPv6 form of 10.0.0.1"),
    ("::ffff:169.254.169.254", "IPv6 form of 169.254.169.254"), ("64:ff9b::a00:1", "IPv6 form of 10.0.0.1"),
    ("2002:7f00:1::", "IPv6 form of 127.0.0.1"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
]


@pytest.mark.parametrize("address,reason", FORBIDDEN)
def test_classification(address, reason):
    assert reason in (forbidden_reason(address) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.215.14"])
def test_public_addresses_pass(address):
    assert forbidden_reason(address) is None


async def test_guard_passes_public_answers_through():
    dns = MapResolver({"example.test": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    answers = await GuardedResolver(dns).resolve("example.test", 443)
    assert [a["host"] for a in answers] == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]


@pytest.mark.parametrize("address,reason", FORBIDDEN)
async def test_forbidden_resolved_address_is_refused_before_connecting(address, reason, connections):
    dns = MapResolver({"victim.test": [address]})
    with pytest.raises(ProviderError) as exc:
        await fetch_page("http://victim.test/", resolver=dns)
    assert exc.value.provider == "website" and not exc.value.retryable
    assert "victim.test resolves to" in exc.value.message and reason in exc.value.message
    assert dns.calls == [("victim.test", 80)]  # judged at connect time, by the resolver
    assert connections == []


async def test_one_forbidden_address_among_public_ones_refuses_the_host(connections):
    dns = MapResolver({"mixed.test": ["93.184.215.14", "10.0.0.7"]})
    with pytest.raises(ProviderError, match="10.0.0.7, a private address"):
        await fetch_page("https://mixed.test/", resolver=dns)
    assert connections == []


@pytest.mark.parametrize("url,reason", [
    ("http://127.0.0.1/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[::ffff:7f00:1]/", "IPv6 form of 127.0.0.1"),
    ("https://10.0.0.1/", "private"),
])
async def test_ip_literals_are_refused_without_any_lookup(url, reason, connections):
    dns = MapResolver({})
    with pytest.raises(ProviderError) as exc:
        await fetch_page(url, resolver=dns)
    assert reason in exc.value.message
    assert dns.calls == [] and connections == []


@pytest.mark.parametrize("url,reason", [
    ("http://localhost/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://0x7f.1/", "resolves to 127.0.0.1, a loopback address"),
    ("http://2130706433/", "not a valid URL"),
    ("http://127.1/", "not a valid URL"),
])
async def test_real_resolver_is_guarded_too(url, reason, connections):
    """The default (system) resolver, wrapped: these names and numeric forms resolve locally, never via DNS."""
    with pytest.raises(ProviderError) as exc:
        await fetch_page(url, timeout=3)
    assert reason in exc.value.message and not exc.value.retryable
    assert connections == []


@pytest.mark.parametrize("url,reason", [
    ("http://example.test:8080/", "only ports 80 and 443"),
    ("https://example.test:8443/", "only ports 80 and 443"),
    ("ftp://example.test/file", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("http://user:secret@example.test/", "user name or password"),
    ("http://user@example.test/", "user name or password"),
    ("http:///nohost", "no host"),
])
async def test_url_rules(url, reason, connections):
    dns = MapResolver({"example.test": ["93.184.215.14"]})
    with pytest.raises(ProviderError) as exc:
        await fetch_page(url, resolver=dns)
    assert reason in exc.value.message and "secret" not in str(exc.value)
    assert dns.calls == [] and connections == []


async def test_allowed_fetch_sends_no_cookies_or_credentials(site, connections):
    page = await fetch_page(f"http://site.test:{site.port}/redirect?to=/page", **local(site))
    assert page.status == 200 and page.content_type == "text/html" and not page.truncated
    assert "Ada Dental" in page.text and page.url == f"http://site.test:{site.port}/page"
    assert connections == [("127.0.0.1", site.port)] * 2  # the spy sees real connections: one per hop
    first, second = site.seen_headers
    for headers in (first, second):
        assert "Cookie" not in headers and "Authorization" not in headers
    assert "tracker" not in str(second)  # the cookie the redirect set was not sent back


async def test_redirect_to_forbidden_host_is_refused_at_the_second_hop(site, connections):
    options = local(site, **{"internal.test": ["10.0.0.5"]})
    with pytest.raises(ProviderError, match="internal.test resolves to 10.0.0.5, a private address"):
        await fetch_page(f"http://site.test:{site.port}/redirect?to=http://internal.test/admin", **options)
    assert options["resolver"].calls == [("site.test", site.port), ("internal.test", 80)]
    assert connections == [("127.0.0.1", site.port)]  # only the allowed first hop


@pytest.mark.parametrize("target,reason", [
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::ffff:127.0.0.1]:80/", "IPv6 form of 127.0.0.1"),
    ("http://public.test:8080/", "only ports 80 and 443"),
    ("ftp://public.test/", "only http and https"),
    ("http://u:p@public.test/", "user name or password"),
])
async def test_redirect_targets_are_rechecked(site, connections, target, reason):
    options = local(site, **{"public.test": ["93.184.215.14"]})
    with pytest.raises(ProviderError) as exc:
        await fetch_page(f"http://site.test:{site.port}/redirect?to={target}", **options)
    assert reason in exc.value.message
    assert connections == [("127.0.0.1", site.port)]


async def test_dns_rebinding_second_answer_is_refused(site, connections):
    """The same name answers the allowed address first, then a metadata address: each hop resolves anew."""
    dns = MapResolver({"flip.test": ["127.0.0.1"]})
    original = dns.resolve

    async def flipping(host, port=0, family=socket.AF_INET):
        answers = await original(host, port, family)
        dns.mapping["flip.test"] = ["169.254.169.254"]  # rebind after the first answer
        return answers

    dns.resolve = flipping  # type: ignore[method-assign]
    with pytest.raises(ProviderError, match="flip.test resolves to 169.254.169.254, a cloud metadata address"):
        await fetch_page(f"http://flip.test:{site.port}/redirect?to=/page", resolver=dns,
                         allow_addresses=[("127.0.0.1", site.port)])
    assert connections == [("127.0.0.1", site.port)]


async def test_five_redirects_are_followed_six_are_refused(site):
    page = await fetch_page(f"http://site.test:{site.port}/chain/5", **local(site))
    assert page.text == "end of chain" and page.url.endswith("/chain/0")
    with pytest.raises(ProviderError, match="too many redirects"):
        await fetch_page(f"http://site.test:{site.port}/chain/6", **local(site))


async def test_body_over_the_cap_is_truncated(site):
    page = await fetch_page(f"http://site.test:{site.port}/big", max_bytes=100_000, **local(site))
    assert page.truncated and len(page.text) == 100_000
    whole = await fetch_page(f"http://site.test:{site.port}/big", max_bytes=3_000_000, **local(site))
    assert not whole.truncated and len(whole.text) == 3_000_000


async def test_slow_server_times_out(site):
    with pytest.raises(ProviderError) as exc:
        await fetch_page(f"http://site.test:{site.port}/slow", timeout=0.5, **local(site))
    assert exc.value.retryable and "timed out" in exc.value.message


async def test_non_text_pages_and_unknown_hosts_are_clear_errors(site):
    with pytest.raises(ProviderError, match=r"not text \(image/png\)"):
        await fetch_page(f"http://site.test:{site.port}/image", **local(site))
    with pytest.raises(ProviderError, match="could not resolve"):
        await fetch_page("https://nowhere.test/", resolver=MapResolver({}))


async def test_exemption_covers_only_its_exact_address_and_port(site, connections):
    """The test hook cannot be stretched: another port on the same address, or a public address on the
    exempted port, is still refused."""
    with pytest.raises(ProviderError, match="loopback"):
        await fetch_page("http://site.test/", **local(site))  # port 80 on 127.0.0.1 is not exempt
    options = local(site, **{"public.test": ["93.184.215.14"]})
    with pytest.raises(ProviderError, match="port"):
        await fetch_page(f"http://public.test:{site.port}/", **options)
    assert connections == []
