"""Input from a hostile or broken client, found by a newcomer's attack run: never a 500, never
plain text, never an echo that breaks the reply."""
from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.settings import load_settings
from tests.conftest import ADMIN_KEY, assert_error


async def raw_request(client: Any, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given (aiohttp's client would refuse non-UTF-8 header values)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head + b"Host: gateway.test\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    header_block, _, body = data.partition(b"\r\n\r\n")
    lines = header_block.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.decode().lower(): v.decode("latin-1").strip() for k, _, v in (l.partition(b":") for l in lines[1:])}
    return status, headers, body


async def test_non_utf8_credentials_are_refused_not_crashed(client: Any, db: Any) -> None:
    cases = [
        (b"GET /api/business-info HTTP/1.1\r\nCookie: next-auth.session-token=\xff\xfe\xfd\r\n", 401, "unauthorized"),
        (b"GET /api/auth/session HTTP/1.1\r\nCookie: next-auth.session-token=\xe9\r\n", 200, None),
        (b"GET /api/admin/organizations HTTP/1.1\r\nx-admin-key: \xff\xfe\r\n", 401, "unauthorized"),
        (b"GET /api/cron/billing-reset HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n", 401, "unauthorized"),
        (b"GET /api/auth/csrf HTTP/1.1\r\nCookie: next-auth.csrf-token=\xff\xfe" + b"a" * 30 + b"|x\r\n", 200, None),
    ]
    for head, status, code in cases:
        got, headers, body = await raw_request(client, head)
        assert got == status, (head, got, body)
        assert headers["content-type"].startswith("application/json") and headers["x-request-id"]
        data = orjson.loads(body)
        if code:
            assert_error(data, code)
    _, _, body = await raw_request(client, b"GET /api/auth/csrf HTTP/1.1\r\nCookie: next-auth.csrf-token=\xff\xfe" + b"a" * 30 + b"|x\r\n")
    assert "\ufffd" not in orjson.loads(body)["csrfToken"]  # a fresh token, not an echo of the cookie


async def test_non_utf8_preflight_headers_get_a_json_error(client: Any, db: Any) -> None:
    for extra in (b"Access-Control-Request-Method: \xff\r\n", b"Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: \xff\r\n"):
        status, headers, body = await raw_request(
            client, b"OPTIONS /api/widget/token HTTP/1.1\r\nOrigin: https://a.example\r\n" + extra)
        assert status in (403, 405), body
        assert headers["content-type"].startswith("application/json") and headers["x-request-id"]
        assert orjson.loads(body)["code"] in ("method_not_allowed", "cors_header_not_allowed")


async def test_a_non_ascii_origin_is_never_echoed(client: Any, db: Any) -> None:
    status, headers, _ = await raw_request(
        client, b"OPTIONS /api/widget/token HTTP/1.1\r\nOrigin: https://\xff.com\r\nAccess-Control-Request-Method: POST\r\n")
    assert status == 403
    assert "access-control-allow-origin" not in headers


async def test_a_route_without_a_body_takes_none(client: Any, signup: Any) -> None:
    t = await signup()
    url = f"/api/admin/users/{t.user_id}/magic-link"
    resp = await client.post(url, json={"x": 1}, headers={"x-admin-key": ADMIN_KEY})
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_request")
    resp = await client.post(url, json={}, headers={"x-admin-key": ADMIN_KEY})  # an empty object is fine
    assert resp.status == 200


def test_secrets_with_surrounding_spaces_are_stripped_and_blank_ones_are_unset(monkeypatch: Any) -> None:
    monkeypatch.setenv("ADMIN_API_KEY", "  the-admin-key  ")
    monkeypatch.setenv("CRON_SECRET", "   ")
    settings = load_settings()
    assert settings.admin_api_key == "the-admin-key"
    assert settings.cron_secret is None


async def test_an_unparseable_request_line_never_logs_its_query(client: Any, db: Any, caplog: Any, capfd: Any) -> None:
    """aiohttp answers a 9 KB request line itself; the token in it must not reach any log."""
    import logging

    from gateway.logs import configure_logging

    configure_logging("info")  # installs the filter on aiohttp's logger (idempotent)
    secret = "SECRETTOKENVALUE" + "q" * 20
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        status, _, _ = await raw_request(client, f"GET /api/auth/magic-link?token={secret}&pad={'a' * 9000} HTTP/1.1\r\n".encode())
    assert status == 400
    assert all(secret not in r.getMessage() and not r.exc_info for r in caplog.records if r.name == "aiohttp.server")
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err


async def test_non_utf8_vapi_secret_is_refused_not_crashed(client: Any, db: Any) -> None:
    body = b'{"message":{"type":"status-update","status":"ringing","call":{"id":"c"}}}'
    head = (b"POST /api/webhooks/vapi HTTP/1.1\r\nContent-Type: application/json\r\nX-Vapi-Secret: \xff\xfe\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head + b"Host: gateway.test\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    assert data.split()[1] == b"401"


async def test_a_client_that_leaves_mid_body_is_not_a_database_outage(config: Any) -> None:
    """aiohttp reports a client that hung up mid-body as an OSError (ConnectionResetError), the
    same family as "database unreachable": the body reader must turn it into a 400 first."""
    from types import SimpleNamespace

    from gateway.errors import ApiError
    from policies.validation import read_body

    class HungUp:
        async def read(self, n: int) -> bytes:
            raise ConnectionResetError("Connection lost")

    request = SimpleNamespace(content_length=1000, content=HungUp(), headers={"Content-Type": "application/json"},
                              content_type="application/json")
    try:
        await read_body(request, config.route("auth.register"))  # type: ignore[arg-type]
    except ApiError as err:
        assert (err.status, err.code) == (400, "incomplete_body")
    else:
        raise AssertionError("expected a 400")
