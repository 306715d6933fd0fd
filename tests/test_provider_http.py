"""The shared JSON adapter transport against a local fake: retries, timeouts, error shapes."""
from __future__ import annotations

import pytest
from aiohttp import web

from providers.errors import ProviderError
from providers.fakes.server import FakeServer, make_app
from providers.http import JsonApi


@pytest.fixture
async def fake():
    app = make_app()

    async def thing(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer good":
            return web.json_response({"message": "Invalid API key", "error": "Unauthorized", "statusCode": 401}, status=401)
        return web.json_response({"ok": True})

    app.router.add_route("*", "/thing", thing)
    server = await FakeServer(app).start()
    server.faults.timeout_seconds = 2
    yield server
    await server.stop()


async def api(fake, key="good", **kw):
    return JsonApi("vapi", fake.url, {"Authorization": f"Bearer {key}"}, backoff=0.01, **kw)


async def test_success_and_bad_credentials(fake):
    client = await api(fake)
    assert await client.request("GET", "/thing") == {"ok": True}
    await client.close()
    client = await api(fake, key="bad")
    with pytest.raises(ProviderError) as exc:
        await client.request("GET", "/thing")
    await client.close()
    err = exc.value
    assert (err.provider, err.status, err.retryable) == ("vapi", 401, False)
    assert "credentials" in err.message and "Invalid API key" in err.message and "bad" not in str(err)


async def test_5xx_then_success_is_retried_for_safe_calls_only(fake):
    client = await api(fake)
    fake.faults.fail_next("5xx", times=2)
    assert await client.request("GET", "/thing") == {"ok": True}
    fake.faults.fail_next("5xx")
    with pytest.raises(ProviderError) as exc:
        await client.request("POST", "/thing", json_body={})  # not idempotent: one try
    assert exc.value.status == 503 and exc.value.retryable
    fake.faults.fail_next("429")
    assert await client.request("POST", "/thing", json_body={}, idempotent=True) == {"ok": True}
    await client.close()


async def test_timeout_and_malformed_reply(fake):
    client = await api(fake, timeout=0.5, attempts=1)
    fake.faults.fail_next("timeout")
    with pytest.raises(ProviderError) as exc:
        await client.request("GET", "/thing")
    assert exc.value.retryable and "timed out" in exc.value.message
    fake.faults.fail_next("malformed")
    with pytest.raises(ProviderError) as exc:
        await client.request("GET", "/thing")
    assert "not JSON" in exc.value.message
    await client.close()
