"""Request input: size, content type, strict JSON, JSON Schema of body and query. Never a 500."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from gateway.pipeline import SERVICES
from tests.conftest import assert_error
from tests.test_pipeline import config_with_routes

ECHO_ROUTES = [
    {"name": "test.echo.post", "method": "POST", "path": "/test/echo", "handler": "test.echo", "auth": "none",
     "cors": "none", "rate_limit": None, "body_limit": 1024,
     "body": {"type": "object", "additionalProperties": False,
              "properties": {"s": {"type": "string", "maxLength": 20}, "n": {"type": "number"},
                             "i": {"type": "integer", "minimum": 0}, "nested": {}, "list": {"type": "array"}}}},
    {"name": "test.echo.get", "method": "GET", "path": "/test/echo", "handler": "test.echo", "auth": "none",
     "cors": "none", "rate_limit": None,
     "query": {"type": "object", "additionalProperties": False, "required": ["q"],
               "properties": {"q": {"type": "string", "minLength": 2, "maxLength": 10},
                              "page": {"type": "integer", "minimum": 1, "maximum": 1000},
                              "ratio": {"type": "number", "maximum": 10},
                              "flag": {"type": "boolean"}}}},
    {"name": "test.echo.put", "method": "PUT", "path": "/test/echo/{id}", "handler": "test.echo", "auth": "none",
     "cors": "none", "rate_limit": None, "body_limit": 0},
]


@pytest.fixture
async def client(make_client: Any) -> Any:
    return await make_client(rate_limit_multiplier=1000)


@pytest.fixture
async def echo(make_client: Any, settings: Any, tmp_path: Path) -> Any:
    return await make_client(config_override=config_with_routes(settings, tmp_path, ECHO_ROUTES))


async def _invalid(resp: Any) -> dict[str, Any]:
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert_error(body, "invalid_request")
    assert isinstance(body["details"], list) and body["details"]
    for detail in body["details"]:
        assert set(detail) == {"path", "message"}
    return body


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0.01)  # separate TCP writes: the server sees several chunks
        yield part


# ---- size and content type -------------------------------------------------------------------------

async def test_wrong_content_type_is_415(client: Any, db: Any) -> None:
    for ctype in ("text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"):
        resp = await client.post("/api/auth/register", data=b'{"a": 1}', headers={"Content-Type": ctype})
        assert resp.status == 415, ctype
        assert_error(await resp.json(), "unsupported_media_type")
    resp = await client.post("/api/auth/register", data=b'{"a": 1}')  # no Content-Type at all
    assert resp.status == 415
    assert await db.fetchval("SELECT count(*) FROM organizations") == 0


async def test_json_with_a_charset_is_json(echo: Any) -> None:
    resp = await echo.post("/test/echo", data='{"s": "é"}'.encode(), headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 200
    assert (await resp.json())["body"] == {"s": "é"}


async def test_body_over_the_limit_with_content_length_is_413(client: Any, db: Any) -> None:
    resp = await client.post("/api/auth/register", data=b"{" + b" " * 9000 + b"}", headers={"Content-Type": "application/json"})
    assert resp.status == 413
    body = await resp.json()
    assert_error(body, "payload_too_large")
    assert body["limit"] == 8192
    assert resp.headers["X-Request-Id"]
    assert await db.fetchval("SELECT count(*) FROM organizations") == 0


async def test_body_over_the_limit_chunked_is_413(client: Any) -> None:
    resp = await client.post("/api/auth/register", data=_chunks(b"{", b" " * 5000, b" " * 5000, b"}"),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert_error(await resp.json(), "payload_too_large")


async def test_a_chunked_body_in_many_pieces_is_read_whole(echo: Any) -> None:
    resp = await echo.post("/test/echo", data=_chunks(b'{"s"', b': "abc', b'def", "n"', b": 1.5}"),
                           headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["body"] == {"s": "abcdef", "n": 1.5}


async def test_a_body_of_exactly_the_limit_is_fine(echo: Any) -> None:
    payload = b'{"s": "x"' + b" " * (1024 - 10) + b"}"
    assert len(payload) == 1024
    resp = await echo.post("/test/echo", data=payload, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    resp = await echo.post("/test/echo", data=payload + b" ", headers={"Content-Type": "application/json"})
    assert resp.status == 413


async def test_zero_body_limit(echo: Any) -> None:
    resp = await echo.put("/test/echo/abc")
    assert resp.status == 200
    assert await resp.json() == {"query": {}, "body": None, "params": {"id": "abc"}, "route": "test.echo.put"}
    resp = await echo.put("/test/echo/abc", json={})
    assert resp.status == 413
    resp = await echo.put("/test/echo/abc", headers={"Content-Type": "application/json"})
    assert resp.status == 200


async def test_an_empty_body_is_an_empty_object_for_schema_routes(echo: Any, client: Any) -> None:
    """Whatever Content-Type a client library adds to a body-less request."""
    for ctype in (None, "application/json", "application/octet-stream", "text/plain"):
        resp = await echo.post("/test/echo", data=b"", headers={"Content-Type": ctype} if ctype else {})
        assert resp.status == 200, ctype
        assert (await resp.json())["body"] == {}
    body = await _invalid(await client.post("/api/auth/register", data=b"", headers={"Content-Type": "application/json"}))
    # Every missing field, each named once.
    assert sorted(d["path"] for d in body["details"]) == ["email", "name", "organizationName", "password"]
    assert {d["message"] for d in body["details"]} == {"is required"}


# ---- strict JSON -----------------------------------------------------------------------------------

BAD_JSON = {
    "malformed": b'{"name": "x",',
    "trailing garbage": b'{"name": "x"} {}',
    "single quotes": b"{'name': 'x'}",
    "NaN": b'{"name": NaN}',
    "Infinity": b'{"name": Infinity}',
    "-Infinity": b'{"name": -Infinity}',
    "NUL in a string": b'{"name": "a\\u0000b"}',
    "NUL in a key": b'{"na\\u0000me": "a"}',
    "NUL deep inside": b'{"name": {"x": ["ok", "a\\u0000"]}}',
    "1e400": b'{"name": 1e400}',
    "-1e400": b'{"name": -1e400}',
    "2**60": b'{"name": 1152921504606846976}',
    "2**70": b'{"name": 1180591620717411303424}',
    "1000-deep": b'{"name": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "8000-deep": b"[" * 8000,
    "invalid UTF-8": b'{"name": "\xff\xfe"}',
    "lone surrogate": b'{"name": "\\ud800"}',
    "UTF-16": '{"name": "x"}'.encode("utf-16"),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
async def test_hostile_json_is_a_400_never_a_500(client: Any, db: Any, name: str) -> None:
    resp = await client.post("/api/auth/register", data=BAD_JSON[name], headers={"Content-Type": "application/json"})
    body = await _invalid(resp)
    assert "\x00" not in body["error"]
    assert await db.fetchval("SELECT count(*) FROM organizations") == 0


async def test_json_array_where_an_object_is_expected(client: Any, db: Any) -> None:
    for payload in (b"[]", b'["a"]', b"42", b'"text"', b"null", b"true"):
        resp = await client.post("/api/auth/register", data=payload, headers={"Content-Type": "application/json"})
        body = await _invalid(resp)
        assert body["details"] == [{"path": "", "message": "must be of type object"}], payload
    assert await db.fetchval("SELECT count(*) FROM organizations") == 0


async def test_numbers_inside_the_safe_range_pass(echo: Any) -> None:
    resp = await echo.post("/test/echo", json={"n": 9007199254740992, "i": 0, "nested": {"x": -9007199254740992, "f": -0.5e-300}})
    assert resp.status == 200
    assert (await resp.json())["body"]["n"] == 2**53
    body = await _invalid(await echo.post("/test/echo", json={"nested": {"x": [1, 2, 2**53 + 1]}}))
    assert body["details"] == [{"path": "nested.x[2]", "message": "number out of range"}]
    # Nothing in this product is counted in such numbers; a float that large is refused too.
    body = await _invalid(await echo.post("/test/echo", json={"n": 1e300}))
    assert body["details"] == [{"path": "n", "message": "number out of range"}]


async def test_nesting_limit(echo: Any) -> None:
    ok = {"nested": 1}
    for _ in range(30):
        ok = {"nested": ok}
    assert (await echo.post("/test/echo", json=ok)).status == 200
    too_deep: Any = 1
    for _ in range(40):
        too_deep = [too_deep]
    body = await _invalid(await echo.post("/test/echo", json={"nested": too_deep}))
    assert "deeper than 32" in body["error"]


# ---- JSON Schema of the body -----------------------------------------------------------------------

async def test_schema_errors_name_every_field_and_never_echo_values(client: Any, db: Any) -> None:
    secret = "pw-" + "s" * 2000
    resp = await client.post("/api/auth/register", json={"email": "not-an-email", "password": secret, "extra": 1, "name": ""})
    body = await _invalid(resp)
    assert body["details"] == [
        {"path": "", "message": "unknown field(s): extra"},
        {"path": "organizationName", "message": "is required"},
        {"path": "email", "message": "must be a valid email"},
        {"path": "name", "message": "must be at least 1 characters"},
        {"path": "password", "message": "must be at most 1024 characters"},
    ]
    assert secret[:20] not in await resp.text()
    assert await db.fetchval("SELECT count(*) FROM organizations") == 0


async def test_schema_type_errors(echo: Any) -> None:
    body = await _invalid(await echo.post("/test/echo", json={"s": 5, "i": -1, "list": {}}))
    assert body["details"] == [
        {"path": "i", "message": "must be at least 0"},
        {"path": "list", "message": "must be of type array"},
        {"path": "s", "message": "must be of type string"},
    ]
    assert body["error"] == "Invalid body i must be at least 0"


# ---- forms -----------------------------------------------------------------------------------------

async def test_form_bodies(client: Any) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for payload, message in ((b"email=a%40b.c&email=x", "appears more than once"), (b"email=a%00b&password=x", "NUL"),
                             (b"&".join(b"f%d=1" % i for i in range(300)), "Malformed form body"),
                             (b"email=%ff%fe&password=x", "Malformed form body")):
        body = await _invalid(await client.post("/api/auth/callback/credentials", data=payload, headers=form))
        assert message in body["error"], (payload[:30], body)


# ---- the query string ------------------------------------------------------------------------------

async def test_query_is_validated_and_typed(echo: Any) -> None:
    resp = await echo.get("/test/echo?q=hello&page=3&ratio=2.5&flag=true")
    assert resp.status == 200
    assert (await resp.json())["query"] == {"q": "hello", "page": 3, "ratio": 2.5, "flag": True}


@pytest.mark.parametrize("query, path, message", [
    ("", "q", "is required"),
    ("q=a", "q", "must be at least 2 characters"),
    ("q=hello&page=abc", "page", "must be of type integer"),
    ("q=hello&page=0", "page", "must be at least 1"),
    ("q=hello&page=1_0", "page", "must be of type integer"),
    ("q=hello&page=%201", "page", "must be of type integer"),
    ("q=hello&page=99999999999999999999999", "page", "must be of type integer"),
    ("q=hello&page=" + "9" * 5000, "page", "must be of type integer"),
    ("q=hello&ratio=nan", "ratio", "must be of type number"),
    ("q=hello&ratio=1e400", "ratio", "must be of type number"),
    ("q=hello&ratio=11", "ratio", "must be at most 10"),
    ("q=hello&flag=yes", "flag", "must be of type boolean"),
    ("q=hello&extra=1", "", "unknown field(s): extra"),
])
async def test_query_validation_400s(echo: Any, query: str, path: str, message: str) -> None:
    body = await _invalid(await echo.get(f"/test/echo?{query}"))
    assert {"path": path, "message": message} in body["details"]


async def test_query_oddities(echo: Any) -> None:
    body = await _invalid(await echo.get("/test/echo?q=ab&q=cd"))
    assert "more than once" in body["error"]
    body = await _invalid(await echo.get("/test/echo?q=a%00b"))
    assert "NUL" in body["error"]
    body = await _invalid(await echo.get("/test/echo?q=%ff%fe"))  # not UTF-8
    assert "not UTF-8" in body["error"]
    body = await _invalid(await echo.get("/test/echo?" + "&".join(f"x{i}=1" for i in range(300))))
    assert "too many parameters" in body["error"]
    resp = await echo.get("/test/echo?q=a+b%2Bc")  # "+" is a space, as browsers encode forms
    assert (await resp.json())["query"] == {"q": "a b+c"}


async def test_real_route_query_validation(client: Any, db: Any) -> None:
    """The magic link's token is required and bounded before the handler runs."""
    body = await _invalid(await client.get("/api/auth/magic-link"))
    assert {"path": "token", "message": "is required"} in body["details"]
    body = await _invalid(await client.get("/api/auth/magic-link?token=short"))
    assert {"path": "token", "message": "must be at least 10 characters"} in body["details"]


async def test_compressed_bodies_are_limited_after_decompression(client: Any, echo: Any) -> None:
    import gzip

    small = gzip.compress(b'{"s": "zipped"}')
    resp = await echo.post("/test/echo", data=small, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 200 and (await resp.json())["body"] == {"s": "zipped"}
    bomb = gzip.compress(b'{"name": "' + b"0" * 2_000_000 + b'"}')
    assert len(bomb) < 8192
    resp = await client.post("/api/auth/register", data=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 413
    assert_error(await resp.json(), "payload_too_large")


def test_patterns_use_ecma_end_of_string() -> None:
    """`$` must not match before a trailing newline (Python's re would)."""
    from policies.schema_dialect import RequestValidator, ecma_pattern

    v = RequestValidator({"type": "string", "pattern": "^[A-Z]{2}$"})
    assert v.is_valid("FR") and not v.is_valid("FR\n") and not v.is_valid("FRA")
    assert ecma_pattern(r"^a\$[$]$").pattern == r"^a\$[$]\Z"  # escaped and in-class dollars stay


async def test_trailing_newline_is_refused_by_a_route_pattern(client: Any, signup: Any, db: Any) -> None:
    t = await signup()
    resp = await client.put("/api/business-address", headers=t.auth, json={
        "businessAddress": {"street": "1 rue", "city": "Paris", "country": "FR\n"}})
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "invalid_request"
    assert body["details"][0]["path"].startswith("businessAddress")  # inside a oneOf: the branch is reported
    assert await db.fetchval("SELECT business_address FROM organizations") is None


async def test_a_remembered_valid_body_never_lets_an_invalid_one_through(client: Any, signup: Any, config: Any) -> None:
    """Valid small bodies are remembered per route; invalid ones are never remembered."""
    t = await signup()
    good = {"businessHours": {"monday": [{"open": "09:00", "close": "17:00"}]}, "timezone": "Europe/Paris"}
    for _ in range(2):
        assert (await client.put("/api/business-hours", json=good, headers=t.auth)).status == 200
    bad = {"businessHours": {"monday": [{"open": "9am", "close": "17:00"}]}}
    for _ in range(2):
        assert (await client.put("/api/business-hours", json=bad, headers=t.auth)).status == 400
    route = client.server.app[SERVICES].config.route("business.hours.put")
    remembered = b"".join(route.valid_bodies)
    assert b'"open":"09:00","close":"17:00"' in remembered.replace(b" ", b"")
    assert b"9am" not in remembered
