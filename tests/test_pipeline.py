"""The request pipeline every route shares: routing errors, request ids, the error shape, logging."""
from __future__ import annotations

import asyncio

import io
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import structlog
import yaml

from gateway import logs, pipeline
from gateway.config import load_config
from gateway.errors import ApiError
from gateway.handlers import load_handlers
from policies.auth import METHODS
from tests.conftest import assert_error


@pytest.fixture
async def client(make_client: Any) -> Any:
    # Many requests from one address: keep the per-ip limits out of the way (test_ratelimit tests them).
    return await make_client(rate_limit_multiplier=1000)


def config_with(settings: Any, **handlers: Any) -> Any:
    """The real endpoints.yaml and plans.yaml with some handlers swapped for test doubles."""
    registry = load_handlers()
    for name in handlers:
        assert name in registry, name
    return load_config(settings.endpoints_file, settings.plans_file, {**registry, **handlers}, METHODS.keys())


async def echo(ctx: Any) -> dict:
    return {"query": ctx.query, "body": ctx.body, "params": ctx.params, "route": ctx.route.name}


def config_with_routes(settings: Any, tmp_path: Path, routes: list[dict[str, Any]], **handlers: Any) -> Any:
    """The real files plus test-only routes (written to tmp_path); ``test.echo`` answers what it got."""
    data = yaml.safe_load(settings.endpoints_file.read_text())
    data["routes"] += routes
    path = tmp_path / "endpoints.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path, settings.plans_file, {**load_handlers(), "test.echo": echo, **handlers}, METHODS.keys())


# ---- routing -------------------------------------------------------------------------------------

async def test_unknown_path_is_a_json_404(client: Any) -> None:
    for path in ("/nope", "/healthz/", "/api/auth/session/extra", "/api/admin/organizations/a/b"):
        resp = await client.get(path)
        assert resp.status == 404, path
        body = await resp.json()
        assert_error(body, "not_found")
        assert resp.headers["Content-Type"].startswith("application/json")
        assert re.fullmatch(r"[0-9a-f]{24}", resp.headers["X-Request-Id"])


async def test_wrong_method_is_a_json_405_with_allow(client: Any) -> None:
    resp = await client.delete("/healthz")
    assert resp.status == 405
    body = await resp.json()
    assert_error(body, "method_not_allowed")
    assert resp.headers["Allow"] == "GET, OPTIONS"
    assert resp.headers["X-Request-Id"]
    resp = await client.patch("/api/embed-token")
    assert resp.status == 405
    assert resp.headers["Allow"] == "DELETE, GET, OPTIONS, POST"


async def test_path_parameters_reach_the_route(client: Any) -> None:
    """A templated path matches (the admin key is missing, so the answer is the route's 401)."""
    resp = await client.get("/api/admin/organizations/00000000-0000-0000-0000-000000000000")
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")


# ---- request id ----------------------------------------------------------------------------------

async def test_every_reply_has_a_request_id(client: Any) -> None:
    seen = set()
    for method, path in (("GET", "/healthz"), ("GET", "/nope"), ("POST", "/healthz"), ("GET", "/api/business-info"),
                         ("POST", "/api/auth/register"), ("OPTIONS", "/api/business-info")):
        resp = await client.request(method, path)
        rid = resp.headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{24}", rid), (method, path, rid)
        seen.add(rid)
    assert len(seen) == 6


async def test_a_sane_incoming_request_id_is_echoed(client: Any) -> None:
    for rid in ("abcdef12", "req-1234.5678_ABCD", "f" * 64):
        resp = await client.get("/healthz", headers={"X-Request-Id": rid})
        assert resp.headers["X-Request-Id"] == rid


@pytest.mark.parametrize("rid", ["short", "f" * 65, "abc def ghi", "<script>alert(1)</script>", "abcdefgh;Set-Cookie: a=b",
                                 "../../etc/passwd", "abcdefgh%0d%0aX-Evil:%201"])
async def test_a_malicious_request_id_is_replaced(client: Any, rid: str) -> None:
    resp = await client.get("/healthz", headers={"X-Request-Id": rid})
    assert resp.status == 200
    assert re.fullmatch(r"[0-9a-f]{24}", resp.headers["X-Request-Id"])
    assert "X-Evil" not in resp.headers and "Set-Cookie" not in resp.headers


# ---- the error shape -----------------------------------------------------------------------------

async def test_an_unexpected_exception_is_a_500_without_details(make_client: Any, settings: Any) -> None:
    async def boom(ctx: Any) -> dict:
        raise RuntimeError("secret internals: password=hunter2 SELECT * FROM users")

    client = await make_client(config_override=config_with(settings, **{"health.healthz": boom}))
    resp = await client.get("/healthz", headers={"X-Request-Id": "trace-me-123"})
    assert resp.status == 500
    body = await resp.json()
    assert body == {"error": "Internal error", "code": "internal_error", "requestId": "trace-me-123"}
    assert resp.headers["X-Request-Id"] == "trace-me-123"


@pytest.mark.parametrize("exc", [
    asyncpg.PostgresConnectionError("connection lost"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.TooManyConnectionsError("too many clients"),
    asyncpg.InterfaceError("pool is closed"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
])
async def test_database_unavailable_is_a_503(make_client: Any, settings: Any, exc: BaseException) -> None:
    async def db_down(ctx: Any) -> dict:
        raise exc

    client = await make_client(config_override=config_with(settings, **{"health.healthz": db_down}))
    resp = await client.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert_error(body, "service_unavailable")
    assert resp.headers["Retry-After"] == "5"
    assert "connection" not in body["error"].lower() or "database" in body["error"].lower()


async def test_api_error_details_and_headers_reach_the_client(make_client: Any, settings: Any) -> None:
    async def teapot(ctx: Any) -> dict:
        raise ApiError(409, "Already there", "conflict_here", headers={"Retry-After": "3"}, existingId="x1")

    client = await make_client(config_override=config_with(settings, **{"health.healthz": teapot}))
    resp = await client.get("/healthz")
    assert resp.status == 409
    assert await resp.json() == {"error": "Already there", "code": "conflict_here", "existingId": "x1"}
    assert resp.headers["Retry-After"] == "3"


# ---- logging -------------------------------------------------------------------------------------

@pytest.fixture
def access_log(monkeypatch: pytest.MonkeyPatch) -> io.BytesIO:
    """The access logger, at info level, through the real processor chain, into a buffer."""
    buf = io.BytesIO()
    logger = structlog.wrap_logger(structlog.BytesLogger(buf), processors=logs.processors(),
                                   wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    monkeypatch.setattr(pipeline, "log", logger)
    return buf


def log_lines(buf: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


async def test_access_log_line(client: Any, access_log: io.BytesIO) -> None:
    resp = await client.get("/healthz?utm=1", headers={"X-Request-Id": "log-test-0001"})
    assert resp.status == 200
    (line,) = log_lines(access_log)
    assert line["event"] == "request" and line["level"] == "info"
    assert line["request_id"] == "log-test-0001"
    assert line["route"] == "healthz"
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 10_000
    assert line["timestamp"].endswith("Z")


async def test_unknown_route_is_logged_without_a_route_name(client: Any, access_log: io.BytesIO) -> None:
    await client.get("/nope")
    (line,) = log_lines(access_log)
    assert (line["route"], line["status"], line["path"]) == (None, 404, "/nope")


async def test_one_time_tokens_in_the_query_never_reach_the_logs(client: Any, access_log: io.BytesIO,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    token = "MAGICtoken" + "Z" * 30
    for method in ("GET", "HEAD"):
        resp = await client.request(method, f"/api/auth/magic-link?token={token}", allow_redirects=False)
        assert resp.status == 400
    lines = log_lines(access_log)
    assert [line["route"] for line in lines] == ["auth.magic-link", "auth.magic-link.head"]
    assert all(line["path"] == "/api/auth/magic-link" for line in lines)
    captured = capfd.readouterr()
    assert token not in access_log.getvalue().decode()
    assert token not in captured.out and token not in captured.err


async def test_an_unexpected_exception_is_logged_with_its_request_id(make_client: Any, settings: Any,
                                                                     access_log: io.BytesIO) -> None:
    async def boom(ctx: Any) -> dict:
        raise RuntimeError("kaput")

    client = await make_client(config_override=config_with(settings, **{"health.healthz": boom}))
    await client.get("/healthz", headers={"X-Request-Id": "boom-request-1"})
    error, access = log_lines(access_log)
    assert error["event"] == "unhandled_error" and error["level"] == "error"
    assert error["request_id"] == "boom-request-1" and "RuntimeError: kaput" in error["exception"]
    assert access["status"] == 500 and access["request_id"] == "boom-request-1"


def test_configure_logging_writes_json_to_stdout_and_masks_secrets() -> None:
    code = (
        "from gateway.logs import configure_logging\n"
        "import structlog\n"
        "configure_logging('info')\n"
        "structlog.get_logger('t').info('hello', request_id='r1', password='hunter2', api_key='k', user_token='t', n=1)\n"
        "structlog.get_logger('t').debug('hidden')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert line["event"] == "hello" and line["request_id"] == "r1" and line["n"] == 1
    assert line["password"] == line["api_key"] == line["user_token"] == "[redacted]"
    assert b"hunter2" not in out.stdout


async def test_replies_serialize_database_values(make_client: Any, settings: Any) -> None:
    """asyncpg returns numeric columns (minutes) as Decimal: a handler may return them as they are."""
    from decimal import Decimal
    from uuid import UUID

    async def numbers(ctx: Any) -> dict:
        return {"minutesUsed": Decimal("12.50"), "whole": Decimal("3.00"), "features": frozenset({"b", "a"}),
                "byId": {UUID(int=1): 1}, "nan": Decimal("NaN")}

    client = await make_client(config_override=config_with(settings, **{"health.healthz": numbers}))
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"minutesUsed": 12.5, "whole": 3, "features": ["a", "b"],
                                 "byId": {"00000000-0000-0000-0000-000000000001": 1}, "nan": None}


@pytest.mark.parametrize("exc", [
    aiohttp.ClientConnectorError(None, OSError(111, "Connection refused")),  # type: ignore[arg-type]
    aiohttp.ClientOSError(104, "Connection reset by peer"),
    aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
    aiohttp.ClientPayloadError("Response payload is not completed"),
])
async def test_an_outside_service_failing_is_a_502_not_a_database_outage(make_client: Any, settings: Any,
                                                                         exc: BaseException) -> None:
    async def provider_down(ctx: Any) -> dict:
        raise exc

    client = await make_client(config_override=config_with(settings, **{"health.healthz": provider_down}))
    resp = await client.get("/healthz")
    assert resp.status == 502
    body = await resp.json()
    assert_error(body, "upstream_unavailable")
    assert "Connection" not in body["error"] and "socket" not in body["error"]


async def test_aiohttp_http_exceptions_keep_their_meaning(make_client: Any, settings: Any) -> None:
    from aiohttp import web

    async def redirect(ctx: Any) -> dict:
        raise web.HTTPFound("/elsewhere")

    async def gone(ctx: Any) -> dict:
        raise web.HTTPGone()

    client = await make_client(config_override=config_with(settings, **{"health.healthz": redirect, "health.readyz": gone}))
    resp = await client.get("/healthz", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/elsewhere"
    resp = await client.get("/readyz")
    assert resp.status == 410
    body = await resp.json()
    assert body["error"] == "Gone" and body["code"]


async def test_buffered_log_lines_reach_stdout_within_the_flush_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway serve` gathers log lines for up to 0.1 s (one write per batch, not per line)."""
    logs.configure_logging("info", flush_after=0.05)
    try:
        structlog.get_logger("test.buffered").info("batched_line", n=1)
        structlog.get_logger("test.buffered").info("batched_line", n=2)
        assert "batched_line" not in capsys.readouterr().out  # still gathered
        await asyncio.sleep(0.15)
        out = capsys.readouterr().out
        assert [orjson.loads(line)["n"] for line in out.splitlines() if "batched_line" in line] == [1, 2]
    finally:
        logs.configure_logging("warning")  # back to the suite's unbuffered set-up
