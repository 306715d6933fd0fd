"""Named CORS policies: app (our front end, with cookies), widget (any real site), none (no browser)."""
from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway.config import CorsPolicy
from policies import cors
from tests.conftest import APP_ORIGIN, PUBLIC_BASE_URL, assert_error

EVIL = "http://evil.test"
SITE = "https://customer.example"
ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
FAKE_EMBED = {"embedToken": "ept_" + "x" * 40}


@pytest.fixture
async def client(make_client: Any) -> Any:
    return await make_client(rate_limit_multiplier=1000)


def _no_cors(resp: Any) -> None:
    for name in (ACAO, ACAC, "Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Expose-Headers"):
        assert name not in resp.headers, name


def _preflight(origin: str | None, method: str, headers: str | None = None) -> dict[str, str]:
    out = {"Access-Control-Request-Method": method}
    if origin is not None:
        out["Origin"] = origin
    if headers:
        out["Access-Control-Request-Headers"] = headers
    return out


# ---- preflight -------------------------------------------------------------------------------------

async def test_preflight_on_a_session_route_is_answered_before_auth(client: Any, db: Any) -> None:
    resp = await client.options("/api/business-info", headers=_preflight(APP_ORIGIN, "PUT", "Content-Type, X-Request-Id"))
    assert resp.status == 204
    assert resp.headers[ACAO] == APP_ORIGIN
    assert resp.headers[ACAC] == "true"
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type, x-request-id"
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in resp.headers["Vary"]
    assert resp.headers["X-Request-Id"]


async def test_preflight_from_the_public_base_url_origin(client: Any) -> None:
    resp = await client.options("/api/auth/session", headers=_preflight(PUBLIC_BASE_URL, "GET"))
    assert resp.status == 204
    assert resp.headers[ACAO] == PUBLIC_BASE_URL


@pytest.mark.parametrize("origin", [EVIL, "null", APP_ORIGIN + "/", APP_ORIGIN.replace("http:", "https:"), None])
async def test_preflight_from_other_origins_is_refused(client: Any, origin: str | None) -> None:
    resp = await client.options("/api/business-info", headers=_preflight(origin, "GET"))
    assert resp.status == 403
    assert_error(await resp.json(), "cors_origin_not_allowed")
    assert ACAO not in resp.headers and ACAC not in resp.headers
    assert "Origin" in resp.headers["Vary"]


async def test_preflight_with_a_header_not_allowed(client: Any) -> None:
    resp = await client.options("/api/business-info", headers=_preflight(APP_ORIGIN, "PUT", "content-type, x-admin-key"))
    assert resp.status == 403
    body = await resp.json()
    assert_error(body, "cors_header_not_allowed")
    assert "x-admin-key" in body["error"]
    assert resp.headers[ACAO] == APP_ORIGIN  # so that the front end can read why


async def test_preflight_for_a_method_the_path_lacks(client: Any) -> None:
    resp = await client.options("/api/business-info", headers=_preflight(APP_ORIGIN, "DELETE"))
    assert resp.status == 405
    assert_error(await resp.json(), "method_not_allowed")
    assert resp.headers["Allow"] == "GET, OPTIONS, PUT"


async def test_preflight_on_an_unknown_path(client: Any) -> None:
    resp = await client.options("/nope", headers=_preflight(APP_ORIGIN, "GET"))
    assert resp.status == 404
    assert ACAO not in resp.headers


@pytest.mark.parametrize("path, method", [("/healthz", "GET"), ("/api/admin/organizations", "GET"),
                                          ("/api/cron/billing-reset", "GET")])
async def test_policy_none_routes_send_no_cors_headers(client: Any, path: str, method: str) -> None:
    resp = await client.options(path, headers=_preflight(APP_ORIGIN, method))
    assert resp.status == 403
    _no_cors(resp)
    assert "Vary" not in resp.headers
    resp = await client.request(method, path, headers={"Origin": APP_ORIGIN})
    _no_cors(resp)
    assert "Vary" not in resp.headers


async def test_widget_preflight_allows_any_real_site_without_credentials(client: Any) -> None:
    resp = await client.options("/api/widget/token", headers=_preflight(SITE, "POST", "content-type"))
    assert resp.status == 204
    assert resp.headers[ACAO] == SITE
    assert ACAC not in resp.headers


# ---- actual requests -------------------------------------------------------------------------------

async def test_app_origin_gets_cors_on_success(client: Any) -> None:
    resp = await client.get("/api/auth/session", headers={"Origin": APP_ORIGIN})
    assert resp.status == 200
    assert resp.headers[ACAO] == APP_ORIGIN
    assert resp.headers[ACAC] == "true"
    assert "x-request-id" in resp.headers["Access-Control-Expose-Headers"].lower()
    assert "Origin" in resp.headers["Vary"]


async def test_cors_headers_are_on_error_replies_too(client: Any) -> None:
    resp = await client.get("/api/business-info", headers={"Origin": APP_ORIGIN})
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")
    assert resp.headers[ACAO] == APP_ORIGIN and resp.headers[ACAC] == "true"
    resp = await client.post("/api/auth/register", data=b"{", headers={"Origin": APP_ORIGIN, "Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.headers[ACAO] == APP_ORIGIN
    resp = await client.post("/api/widget/token", json=FAKE_EMBED, headers={"Origin": SITE})
    assert resp.status == 403
    assert resp.headers[ACAO] == SITE and ACAC not in resp.headers


async def test_unknown_origin_gets_no_acao_but_vary(client: Any) -> None:
    resp = await client.get("/api/auth/session", headers={"Origin": EVIL})
    assert resp.status == 200  # CORS is the browser's business; the server just does not allow it
    assert ACAO not in resp.headers and ACAC not in resp.headers
    assert "Origin" in resp.headers["Vary"]


async def test_no_origin_gets_no_acao_but_vary(client: Any) -> None:
    resp = await client.get("/api/auth/session")
    assert ACAO not in resp.headers
    assert "Origin" in resp.headers["Vary"]  # a shared cache must not reuse it for a browser


@pytest.mark.parametrize("path, method, body", [("/api/auth/session", "GET", None),
                                                ("/api/widget/token", "POST", FAKE_EMBED),
                                                ("/healthz", "GET", None)])
async def test_the_null_origin_never_gets_acao(client: Any, path: str, method: str, body: Any) -> None:
    resp = await client.request(method, path, json=body, headers={"Origin": "null"})
    assert ACAO not in resp.headers
    resp = await client.options(path, headers=_preflight("null", method))
    assert ACAO not in resp.headers and resp.status == 403


@pytest.mark.parametrize("origin", ["null", "https://customer.example/page", "https://user@customer.example",
                                    "https://customer.example#frag", "https://customer.example?x=1", "ftp://customer.example",
                                    "https://customer.example:99999", "https://", "customer.example", "*"])
async def test_widget_policy_refuses_what_is_not_an_origin(client: Any, origin: str) -> None:
    resp = await client.post("/api/widget/token", json=FAKE_EMBED, headers={"Origin": origin})
    assert ACAO not in resp.headers
    assert resp.status != 500


# ---- unit ------------------------------------------------------------------------------------------

def test_vary_keeps_what_the_handler_set(settings: Any) -> None:
    policy = CorsPolicy("app", "app", True, ("content-type",), ("x-request-id",), 600)
    resp = web.Response(headers={"Vary": "Cookie"})
    cors.add_cors_headers(resp, policy, APP_ORIGIN, settings)
    assert resp.headers["Vary"] == "Cookie, Origin"
    resp = web.Response(headers={"Vary": "origin"})
    cors.add_cors_headers(resp, policy, APP_ORIGIN, settings)
    assert resp.headers["Vary"] == "origin"


def test_explicit_origin_lists(settings: Any) -> None:
    policy = CorsPolicy("partners", ("https://a.example", "https://b.example"), False, ("content-type",), (), 60)
    assert cors.allowed_origin(policy, "https://a.example", settings) == "https://a.example"
    assert cors.allowed_origin(policy, "https://c.example", settings) is None
    assert cors.allowed_origin(policy, "null", settings) is None
    assert cors.allowed_origin(policy, None, settings) is None
