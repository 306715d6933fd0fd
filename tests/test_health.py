"""Liveness (/healthz: the process answers) and readiness (/readyz: the database answers too)."""
from __future__ import annotations

from typing import Any

import pytest

from gateway.pipeline import SERVICES


class _NoDatabase:
    """Stands in for the pool: any use is a test failure for /healthz, an outage for /readyz."""

    used = False

    def __getattr__(self, name: str) -> Any:
        _NoDatabase.used = True
        raise ConnectionRefusedError(111, "Connection refused")


@pytest.fixture
async def no_database(client: Any) -> Any:
    services = client.server.app[SERVICES]
    real = services.pool
    services.pool = _NoDatabase()
    _NoDatabase.used = False
    yield services
    services.pool = real  # the app's cleanup closes the real pool


async def test_healthz_never_touches_the_database(client: Any, no_database: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert resp.headers["X-Request-Id"]
    assert not _NoDatabase.used


async def test_readyz_when_ready(client: Any) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ready" and body["database"] == "ok"
    assert body["sandboxed"] == []


async def test_readyz_lists_sandboxed_services(client: Any) -> None:
    client.server.app[SERVICES].sandboxed.update({"twilio": "TWILIO_ACCOUNT_SID is not set", "stripe": "no key"})
    body = await (await client.get("/readyz")).json()
    assert body["status"] == "ready"
    assert body["sandboxed"] == ["stripe", "twilio"]  # names only, sorted; never why (it names env vars)


async def test_readyz_without_a_database_is_503(client: Any, no_database: Any) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["code"] == "not_ready" and body["error"]
    assert body["status"] == "unavailable" and body["database"] == "unreachable"
    assert "Connection refused" not in await resp.text()


async def test_health_routes_are_not_rate_limited_nor_cors(make_client: Any, config: Any) -> None:
    for name in ("healthz", "readyz"):
        route = config.route(name)
        assert route.rate_limits == () and route.cors.name == "none" and route.auth == "none"
    client = await make_client(rate_limit_multiplier=0.0001)
    for _ in range(5):
        assert (await client.get("/healthz")).status == 200
