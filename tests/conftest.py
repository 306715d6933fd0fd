"""Test harness: a real PostgreSQL (embedded, or TEST_DATABASE_URL), the real app over HTTP.

Every test starts from empty tables. ``signup`` makes a tenant through the public API (register,
then sign in) and returns its session cookie, so tests exercise the same path a user does.
WARNING: with TEST_DATABASE_URL set, every table in that database is truncated between tests.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import pytest
from aiohttp import DummyCookieJar, web

from gateway import security
from gateway.app import create_app, read_config
from gateway.db import migrate
from gateway.logs import configure_logging
from gateway.pipeline import ROUTE_NAME, SERVICES
from gateway.settings import Settings, load_settings

ADMIN_KEY = "test-admin-key-" + "a" * 24
CRON_SECRET = "test-cron-secret-" + "b" * 24
PUBLIC_BASE_URL = "http://gateway.test"
VAPI_SECRET = "test-vapi-webhook-secret-" + "c" * 20
APP_ORIGIN = "http://app.test"
TWILIO = dict(
    twilio_account_sid="AC" + "1" * 32,
    twilio_api_key_sid="SK" + "2" * 32,
    twilio_api_key_secret="test-twilio-api-key-secret-0123456789abcdef",
    twilio_twiml_app_sid="AP" + "3" * 32,
)
PASSWORD = "correct horse battery staple"

# Route names called by any test in this run; tests/test_zz_every_route_is_tested.py checks them.
CALLED_ROUTES: set[str] = set()

security.use_cheap_kdf_for_tests()
configure_logging(os.environ.get("TEST_LOG_LEVEL", "warning"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from gateway.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"))
    dsn = pg.start()
    asyncio.run(migrate(dsn))
    yield dsn
    pg.stop()
    # As root, a cluster the unprivileged server user could not reach lives under /var/tmp; drop it.
    if pg.cluster_dir and str(pg.cluster_dir).startswith("/var/tmp/gateway-pg/"):
        shutil.rmtree(pg.cluster_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    if os.environ.get("TEST_DATABASE_URL"):
        asyncio.run(migrate(database_url))
    return load_settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        admin_api_key=ADMIN_KEY,
        cron_secret=CRON_SECRET,
        public_base_url=PUBLIC_BASE_URL,
        app_origins=(APP_ORIGIN,),
        rate_limit_multiplier=1.0,
        trust_forwarded_for=False,
        session_cache_seconds=30.0,
        vapi_webhook_secret=VAPI_SECRET,
        endpoints_file=Path(__file__).resolve().parent.parent / "endpoints.yaml",
        plans_file=Path(__file__).resolve().parent.parent / "plans.yaml",
        **TWILIO,
    )


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture(scope="session")
def config(base_settings: Settings) -> Any:
    return read_config(base_settings)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging and asserting; tables are emptied first."""
    conn = await asyncpg.connect(database_url)
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    if tables:
        await conn.execute("TRUNCATE " + ", ".join(f'"{t["tablename"]}"' for t in tables) + " CASCADE")
    yield conn
    await conn.close()


@web.middleware
async def _record_route(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    finally:
        if request.get(ROUTE_NAME):
            CALLED_ROUTES.add(request[ROUTE_NAME])


def build_app(settings: Settings, config: Any) -> web.Application:
    app = create_app(settings, config)
    app.middlewares.insert(0, _record_route)
    return app


@pytest.fixture
async def make_client(aiohttp_client: Any, db: asyncpg.Connection, settings: Settings, config: Any) -> Any:
    """Build a client for an app with changed settings: ``await make_client(admin_api_key=None)``."""

    async def make(config_override: Any = None, **overrides: Any) -> Any:
        s = dataclasses.replace(settings, **overrides) if overrides else settings
        return await aiohttp_client(build_app(s, config_override or config))

    return make


@pytest.fixture
def make_jarless(aiohttp_client: Any, db: asyncpg.Connection, settings: Settings, config: Any) -> Any:
    """Clients without a cookie jar: every request carries exactly the cookies the test names."""

    async def make(**overrides: Any) -> Any:
        s = dataclasses.replace(settings, **overrides) if overrides else settings
        return await aiohttp_client(build_app(s, config), cookie_jar=DummyCookieJar())

    return make


@pytest.fixture
async def client(make_client: Any) -> Any:
    return await make_client()


@dataclasses.dataclass
class Tenant:
    org_id: str
    user_id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Cookie": f"next-auth.session-token={self.token}"}


@pytest.fixture
def signup(client: Any, db: asyncpg.Connection) -> Any:
    """Register + sign in through the API; optionally put the organization on a plan."""

    async def make(plan: str | None = None, email: str | None = None, password: str = PASSWORD,
                   org_name: str = "Acme Dental") -> Tenant:
        email = email or f"owner-{uuid.uuid4().hex[:10]}@example.com"
        resp = await client.post("/api/auth/register", json={
            "name": "Owner", "email": email, "password": password, "organizationName": org_name})
        assert resp.status == 201, await resp.text()
        created = await resp.json()
        resp = await client.post("/api/auth/callback/credentials", json={"email": email, "password": password})
        assert resp.status == 200, await resp.text()
        token = resp.cookies["next-auth.session-token"].value
        client.session.cookie_jar.clear()
        if plan:
            await db.execute("UPDATE organizations SET plan = $1 WHERE id = $2", plan, uuid.UUID(created["organizationId"]))
        return Tenant(created["organizationId"], created["userId"], email, password, token)

    return make


async def listening(client: Any) -> Any:
    """The app's services once its LISTEN connection is up: the session and token caches are only
    used then, so cache and invalidation tests must wait for it to really exercise a cached entry."""
    services = client.server.app[SERVICES]
    for _ in range(500):
        if services.listener is not None and services.listener.healthy:
            return services
        await asyncio.sleep(0.01)
    raise AssertionError("the invalidation listener never connected")


def assert_error(body: dict[str, Any], code: str) -> None:
    """The one error shape."""
    assert isinstance(body.get("error"), str) and body["error"], body
    assert body.get("code") == code, body


# ---- the route-coverage guard (tests/test_zz_every_route_is_tested.py) ------------------------------
# It runs last and judges only a run that could have called every route: all test files collected,
# no -k/-m/--deselect/--lf/--sw and no single-test node ids.
FULL_RUN = pytest.StashKey[bool]()
_ROUTE_GUARD_FILE = "test_zz_every_route_is_tested.py"


@pytest.hookimpl(trylast=True)  # after -k, -m, --lf... have deselected what they deselect
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    guard = [item for item in items if item.path.name == _ROUTE_GUARD_FILE]
    items[:] = [item for item in items if item.path.name != _ROUTE_GUARD_FILE] + guard
    on_disk = {p.name for p in Path(__file__).resolve().parent.glob("test_*.py")}
    collected = {item.path.name for item in items}
    option = config.option
    config.stash[FULL_RUN] = (
        on_disk <= collected
        and not getattr(option, "keyword", "")
        and not getattr(option, "markexpr", "")
        and not getattr(option, "deselect", None)
        and not getattr(option, "lf", False)
        and not getattr(option, "stepwise", False)
        and not any("::" in str(arg) for arg in config.args)
    )
