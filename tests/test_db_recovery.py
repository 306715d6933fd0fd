"""The database goes away and comes back: 503 in the error shape meanwhile, recovery without a restart."""
from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from gateway import embedded_pg
from gateway.db import migrate
from gateway.embedded_pg import EmbeddedPostgres
from tests.conftest import PASSWORD, assert_error


@pytest.fixture
async def second_pg(tmp_path: Path) -> Any:
    pg = EmbeddedPostgres(tmp_path / "pg2")
    dsn = await asyncio.to_thread(pg.start)
    await migrate(dsn)
    yield pg, dsn
    await asyncio.to_thread(pg.stop)
    # As root under a private tmp dir the cluster goes to /var/tmp/gateway-pg/<hash>: remove it too.
    digest = hashlib.sha256(str((tmp_path / "pg2").absolute()).encode()).hexdigest()[:16]
    shutil.rmtree(Path("/var/tmp/gateway-pg") / digest, ignore_errors=True)


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_database_outage_is_503_and_recovers_without_restart(make_client: Any, second_pg: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pg, dsn = second_pg
    port = int(dsn.rsplit(":", 1)[1].split("/")[0])
    client = await make_client(database_url=dsn, rate_limit_multiplier=1000)
    resp = await client.post("/api/auth/register", json={"name": "O", "email": "o@example.com", "password": PASSWORD,
                                                         "organizationName": "Outage Inc"})
    assert resp.status == 201, await resp.text()
    resp = await client.post("/api/auth/callback/credentials", json={"email": "o@example.com", "password": PASSWORD})
    assert resp.status == 200
    cookie = {"Cookie": f"next-auth.session-token={resp.cookies['next-auth.session-token'].value}"}
    client.session.cookie_jar.clear()
    assert (await client.get("/api/auth/session", headers=cookie)).status == 200
    assert (await client.get("/readyz")).status == 200

    await asyncio.to_thread(pg.stop)

    async def readyz_down() -> bool:
        return (await client.get("/readyz")).status == 503

    await _eventually(readyz_down, timeout=10)
    # A session that was cached while the database was up is not trusted once the listener is down.
    async def session_down() -> bool:
        return (await client.get("/api/auth/session", headers=cookie)).status == 503

    await _eventually(session_down, timeout=10)
    resp = await client.get("/api/auth/session", headers=cookie)
    assert resp.status == 503
    body = await resp.json()
    assert_error(body, "service_unavailable")
    assert resp.headers["Retry-After"] and resp.headers["X-Request-Id"]
    resp = await client.post("/api/auth/register", json={"name": "P", "email": "p@example.com", "password": PASSWORD,
                                                         "organizationName": "Down Inc"})
    assert resp.status == 503
    assert_error(await resp.json(), "service_unavailable")
    assert (await client.get("/healthz")).status == 200  # the process itself is fine

    # Back on the same address (a restarted server or a failed-over one behind the same name).
    monkeypatch.setattr(embedded_pg, "_free_port", lambda: port)
    await asyncio.to_thread(pg.start)

    async def readyz_up() -> bool:
        return (await client.get("/readyz")).status == 200

    async def session_up() -> bool:
        return (await client.get("/api/auth/session", headers=cookie)).status == 200

    await _eventually(readyz_up)
    await _eventually(session_up)
    body = await (await client.get("/api/auth/session", headers=cookie)).json()
    assert body["user"]["email"] == "o@example.com"
    resp = await client.post("/api/auth/register", json={"name": "P", "email": "p@example.com", "password": PASSWORD,
                                                         "organizationName": "Back Inc"})
    assert resp.status == 201
