"""Pure unit tests of config loading: every kind of problem as the exact ``file:line: message``."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gateway.app import read_config
from gateway.config import Config, ConfigError, load_config
from gateway.settings import load_settings

# A small, valid pair of files. Tests edit them with plain text replacement, then compute the
# expected line from the text itself (``line_of``), so the assertions stay exact and readable.
ENDPOINTS = textwrap.dedent("""\
    version: 1
    cors_policies:
      app:
        allow_origins: app
        credentials: true
      none:
        allow_origins: none
    rate_limits:
      per_ip:
        key: ip
        limit: 10
        per_seconds: 60
    defaults:
      cors: app
      rate_limit: per_ip
      body_limit: 1024
    routes:
      - name: one
        method: GET
        path: /one
        handler: t.one
        auth: none
      - name: two
        method: POST
        path: /items/{id}
        handler: t.two
        auth: session
        feature: pro.thing
        body:
          type: object
          properties:
            label: {type: string}
    """)

PLANS = textwrap.dedent("""\
    version: 1
    features:
      basic.thing: Basic things
      pro.thing: Pro things
    no_plan:
      features: []
      included_minutes: 0
    tiers:
      - name: BASIC
        features: [basic.thing]
        included_minutes: 10
        monthly_price_cents: 100
        overage: {enabled: false, cents_per_minute: 0}
        stripe_price_id: price_basic
      - name: PRO
        features: [pro.thing]
        included_minutes: 100
        monthly_price_cents: 1000
        overage: {enabled: true, cents_per_minute: 5}
        stripe_price_id: null
    """)


async def _one(ctx: Any) -> dict:
    return {}


async def _two(ctx: Any) -> dict:
    return {}


HANDLERS = {"t.one": _one, "t.two": _two}
AUTH = ("none", "session")


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in text"
    return hits[nth - 1]


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def load(tmp_path: Path, endpoints: str = ENDPOINTS, plans: str = PLANS, handlers: dict | None = None,
         auth: tuple[str, ...] = AUTH) -> Config:
    (tmp_path / "endpoints.yaml").write_text(endpoints)
    (tmp_path / "plans.yaml").write_text(plans)
    return load_config(tmp_path / "endpoints.yaml", tmp_path / "plans.yaml", HANDLERS if handlers is None else handlers, auth)


def problems(tmp_path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, **kwargs)
    return [str(p) for p in exc.value.problems]


# ---- the baseline ------------------------------------------------------------------------------

def test_the_small_files_load(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert [r.name for r in config.routes] == ["one", "two"]
    two = config.route("two")
    assert (two.method, two.path, two.auth, two.feature, two.cors.name) == ("POST", "/items/{id}", "session", "pro.thing", "app")
    assert [r.name for r in two.rate_limits] == ["per_ip"]  # from defaults
    assert two.body_limit == 1024 and two.content_types == ("application/json",)
    assert two.line == line_of(ENDPOINTS, "name: two")
    routes, params = config.match("/items/42")
    assert routes is not None and routes["POST"] is two and params == {"id": "42"}
    assert config.match("/items/42/more") == (None, {})


def test_the_real_files_load() -> None:
    config = read_config(load_settings())
    names = {r.name for r in config.routes}
    assert {"healthz", "readyz", "auth.register", "embed-token.list"} <= names
    assert config.plans.tier_names()[:3] == ["STARTER", "ADVANCED", "PRO"]
    assert config.route("embed-token.list").feature == "embed_tokens"
    assert config.plans.required_tier("embed_tokens") == "PRO"


def test_config_objects_are_immutable(tmp_path: Path) -> None:
    config = load(tmp_path)
    route, tier = config.routes[0], config.plans.tiers[0]
    for obj, attr in ((config, "routes"), (route, "auth"), (route.cors, "credentials"), (route.rate_limits[0], "limit"),
                      (config.plans, "tiers"), (tier, "features")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, None)
    assert isinstance(config.routes, tuple) and isinstance(config.plans.tiers, tuple)
    assert isinstance(tier.features, frozenset)
    for mapping in (config.cors_policies, config.rate_limits, config.static, config.static["/one"], config.plans.features):
        with pytest.raises(TypeError):
            mapping["x"] = None  # type: ignore[index]


def test_tiers_are_cumulative(tmp_path: Path) -> None:
    basic, pro = load(tmp_path).plans.tiers
    assert basic.features == {"basic.thing"}
    assert pro.own_features == {"pro.thing"} and pro.features == {"basic.thing", "pro.thing"}
    assert [t.rank for t in (basic, pro)] == [0, 1]
    # What an organization without a plan has, every tier has too: paying never takes a feature away.
    plans = edit(PLANS, "features: [basic.thing]\n", "features: []\n")
    plans = edit(plans, "no_plan:\n  features: []", "no_plan:\n  features: [basic.thing]")
    basic, pro = load(tmp_path, plans=plans).plans.tiers
    assert basic.features == {"basic.thing"} and pro.features == {"basic.thing", "pro.thing"}


# ---- YAML ---------------------------------------------------------------------------------------

def test_yaml_syntax_error(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    path: /one\n", "    path: [/one\n")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'handler: t.one')}: invalid YAML: expected ',' or ']', but got ':' "
        f"(while parsing a flow sequence on line {line_of(endpoints, 'path: [/one')})",
    ]
    plans = edit(PLANS, "  pro.thing: Pro things\n", "  pro.thing: Pro things\n\tbad: tab\n")
    assert problems(tmp_path, plans=plans) == [
        f"plans.yaml:{line_of(plans, 'bad: tab')}: invalid YAML: found character '\\t' that cannot start any token",
    ]


def test_duplicate_keys_in_both_files(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    auth: session\n")
    plans = edit(PLANS, "  included_minutes: 0\n", "  included_minutes: 0\n  included_minutes: 5\n")
    assert problems(tmp_path, endpoints=endpoints, plans=plans) == [
        f"endpoints.yaml:{line_of(endpoints, 'auth: session', 1)}: duplicate key 'auth' (first defined on line {line_of(endpoints, 'auth: none')})",
        f"plans.yaml:{line_of(plans, 'included_minutes: 5')}: duplicate key 'included_minutes' (first defined on line {line_of(plans, 'included_minutes: 0')})",
    ]


def test_not_utf8_and_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "endpoints.yaml").write_bytes(ENDPOINTS.encode() + b"# caf\xe9\n")
    (tmp_path / "plans.yaml").write_text("")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "endpoints.yaml", tmp_path / "plans.yaml", HANDLERS, AUTH)
    n = len(ENDPOINTS.splitlines()) + 1
    assert [str(p) for p in exc.value.problems] == [
        f"endpoints.yaml:{n}: not UTF-8 text (byte 0xe9 at offset {len(ENDPOINTS) + 5})",
        "plans.yaml:1: the file is empty; expected a mapping (see the shipped file)",
    ]
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml", tmp_path / "plans.yaml", HANDLERS, AUTH)
    assert str(exc.value.problems[0]) == "nope.yaml:1: cannot read file: No such file or directory"


def test_unhashable_yaml_key_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    ? [a, b]\n    : 1\n")
    got = problems(tmp_path, endpoints=endpoints)
    assert got == [f"endpoints.yaml:{line_of(endpoints, '? [a, b]')}: invalid YAML: a key must be a plain value, not a list or mapping"]


# ---- JSON Schema of each file --------------------------------------------------------------------

def test_schema_wrong_type(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: session\n", "    auth: session\n    body_limit: big\n")
    plans = edit(PLANS, "included_minutes: 100", "included_minutes: lots")
    assert problems(tmp_path, endpoints=endpoints, plans=plans) == [
        f"endpoints.yaml:{line_of(endpoints, 'body_limit: big')}: routes/1/body_limit: 'big' is not of type 'integer'",
        f"plans.yaml:{line_of(plans, 'included_minutes: lots')}: tiers/1/included_minutes: 'lots' is not of type 'integer'",
    ]


def test_schema_missing_required_points_at_the_item(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    method: POST\n", "")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'name: two')}: routes/1: 'method' is a required property",
    ]


def test_schema_unknown_property_points_at_the_key(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    featur: pro.thing\n")
    endpoints = edit(endpoints, "    credentials: true\n", "    credentials: true\n    max_agee: 5\n")
    plans = edit(PLANS, "    stripe_price_id: null\n", "    stripe_price_id: null\n    selfserve: true\n")
    assert problems(tmp_path, endpoints=endpoints, plans=plans) == [
        f"endpoints.yaml:{line_of(endpoints, 'max_agee')}: cors_policies/app: unknown property 'max_agee'",
        f"endpoints.yaml:{line_of(endpoints, 'featur:')}: routes/0: unknown property 'featur'",
        f"plans.yaml:{line_of(plans, 'selfserve')}: tiers/1: unknown property 'selfserve'",
    ]


def test_schema_enum_and_pattern(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "method: GET", "method: FETCH")
    endpoints = edit(endpoints, "key: ip", "key: cookie")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'key: cookie')}: rate_limits/per_ip/key: 'cookie' does not match "
        "'^(ip|user|organization|token|body\\\\.[A-Za-z][A-Za-z0-9_]*)$'",
        f"endpoints.yaml:{line_of(endpoints, 'method: FETCH')}: routes/0/method: 'FETCH' is not one of "
        "['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD']",
    ]


# ---- cross-checks --------------------------------------------------------------------------------

def test_unknown_handler(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "handler: t.one", "handler: t.nope")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'routes:')}: handler 't.one' exists in the code but no route uses it",
        f"endpoints.yaml:{line_of(endpoints, 't.nope')}: unknown handler 't.nope'",
    ]


def test_handler_that_no_route_uses(tmp_path: Path) -> None:
    got = problems(tmp_path, handlers={**HANDLERS, "t.orphan": _one})
    assert got == [f"endpoints.yaml:{line_of(ENDPOINTS, 'routes:')}: handler 't.orphan' exists in the code but no route uses it"]


def test_a_handler_may_serve_two_routes(tmp_path: Path) -> None:
    endpoints = ENDPOINTS + "  - {name: three, method: GET, path: /three, handler: t.one, auth: none}\n"
    assert load(tmp_path, endpoints=endpoints).route("three").handler is _one


def test_unknown_feature(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "feature: pro.thing", "feature: pro.thingy")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'pro.thingy')}: unknown feature 'pro.thingy' (not declared in plans.yaml)",
    ]


def test_unknown_auth_method(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "auth: session", "auth: sesion")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'auth: sesion')}: unknown auth method 'sesion' (known: none, session)",
    ]


def test_unknown_cors_policy_on_route_and_in_defaults(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    cors: wide-open\n")
    endpoints = edit(endpoints, "  cors: app\n", "  cors: ap\n")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'cors: ap')}: unknown CORS policy 'ap'",
        f"endpoints.yaml:{line_of(endpoints, 'cors: wide-open')}: unknown CORS policy 'wide-open'",
        # the second route uses the (unknown) default
        f"endpoints.yaml:{line_of(endpoints, 'name: two')}: unknown CORS policy 'ap'",
    ]


def test_unknown_rate_limit(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    rate_limit: [per_ip, per_moon]\n")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'per_moon')}: unknown rate limit 'per_moon'",
    ]


def test_same_rate_limit_twice_on_a_route(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    rate_limit: [per_ip, per_ip]\n")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, '[per_ip, per_ip]')}: rate limit 'per_ip' is listed more than once",
    ]


def test_token_rate_limit_needs_embed_token_auth(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    per_seconds: 60\n", "    per_seconds: 60\n  per_token: {key: token, limit: 5, per_seconds: 60}\n")
    endpoints = edit(endpoints, "    auth: none\n", "    auth: none\n    rate_limit: per_token\n")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'rate_limit: per_token')}: rate limit 'per_token' counts per token, but the route's auth is 'none'",
    ]


def test_duplicate_method_and_path(tmp_path: Path) -> None:
    endpoints = ENDPOINTS + "  - {name: three, method: GET, path: /one, handler: t.one, auth: none}\n"
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'name: three')}: duplicate route GET /one (first on line {line_of(endpoints, 'name: one')})",
    ]


def test_duplicate_path_when_only_the_param_name_differs(tmp_path: Path) -> None:
    endpoints = ENDPOINTS + "  - {name: three, method: POST, path: '/items/{itemId}', handler: t.one, auth: none}\n"
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'name: three')}: duplicate route POST /items/{{itemId}} (first on line {line_of(endpoints, 'name: two')})",
    ]


def test_same_path_other_method_is_fine(tmp_path: Path) -> None:
    endpoints = ENDPOINTS + "  - {name: three, method: DELETE, path: '/items/{id}', handler: t.one, auth: none}\n"
    routes, _ = load(tmp_path, endpoints=endpoints).match("/items/1")
    assert routes is not None and sorted(routes) == ["DELETE", "POST"]


def test_repeated_path_parameter(tmp_path: Path) -> None:
    endpoints = ENDPOINTS + "  - {name: three, method: GET, path: '/a/{id}/b/{id}', handler: t.one, auth: none}\n"
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'name: three')}: path parameter {{id}} appears more than once",
    ]


def test_duplicate_route_name(tmp_path: Path) -> None:
    endpoints = ENDPOINTS + "  - {name: one, method: GET, path: /three, handler: t.one, auth: none}\n"
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'path: /three')}: duplicate route name 'one' (first on line {line_of(endpoints, 'name: one')})",
    ]


def test_get_route_with_a_body_schema(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "    auth: none\n", "    auth: none\n    body: {type: object}\n")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'body: {type: object}')}: GET routes take no body",
    ]


def test_invalid_inline_json_schema(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "label: {type: string}", "label: {type: strin}")
    assert problems(tmp_path, endpoints=endpoints) == [
        f"endpoints.yaml:{line_of(endpoints, 'type: strin')}: body schema at properties/label/type: "
        "'strin' is not valid under any of the given schemas",
    ]


def test_tier_granting_an_undeclared_feature(tmp_path: Path) -> None:
    plans = edit(PLANS, "features: [pro.thing]", "features: [pro.thing, sms.sned]")
    assert problems(tmp_path, plans=plans) == [
        f"plans.yaml:{line_of(plans, 'sms.sned')}: unknown feature 'sms.sned' in tier PRO (declare it under features:)",
    ]


def test_no_plan_with_an_undeclared_feature(tmp_path: Path) -> None:
    plans = edit(PLANS, "no_plan:\n  features: []", "no_plan:\n  features: [free.lunch]")
    assert problems(tmp_path, plans=plans) == [
        f"plans.yaml:{line_of(plans, 'free.lunch')}: unknown feature 'free.lunch' in no_plan",
    ]


def test_feature_granted_twice(tmp_path: Path) -> None:
    plans = edit(PLANS, "features: [pro.thing]", "features: [pro.thing, basic.thing]")
    assert problems(tmp_path, plans=plans) == [
        f"plans.yaml:{line_of(plans, '[pro.thing, basic.thing]')}: feature 'basic.thing' is already granted by the lower tier BASIC (tiers inherit)",
    ]


def test_duplicate_tier(tmp_path: Path) -> None:
    plans = edit(PLANS, "name: PRO", "name: BASIC")
    plans = edit(plans, "features: [pro.thing]", "features: []")
    endpoints = edit(ENDPOINTS, "    feature: pro.thing\n", "")
    assert problems(tmp_path, plans=plans, endpoints=endpoints) == [
        f"plans.yaml:{line_of(plans, 'name: BASIC', 2)}: duplicate tier 'BASIC' (first on line {line_of(plans, 'name: BASIC')})",
    ]


def test_every_problem_in_both_files_at_once_sorted(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "handler: t.two", "handler: t.three")
    endpoints = edit(endpoints, "auth: none", "auth: nobody")
    endpoints = edit(endpoints, "  body_limit: 1024\n", "  body_limit: -1\n")
    plans = edit(PLANS, "features: [basic.thing]", "features: [basic.thing, ghost]")
    plans = edit(plans, "cents_per_minute: 5", "cents_per_minute: -5")
    got = problems(tmp_path, endpoints=endpoints, plans=plans)
    assert got == [
        f"endpoints.yaml:{line_of(endpoints, 'body_limit: -1')}: defaults/body_limit: -1 is less than the minimum of 0",
        f"endpoints.yaml:{line_of(endpoints, 'routes:')}: handler 't.two' exists in the code but no route uses it",
        f"endpoints.yaml:{line_of(endpoints, 'auth: nobody')}: unknown auth method 'nobody' (known: none, session)",
        f"endpoints.yaml:{line_of(endpoints, 't.three')}: unknown handler 't.three'",
        f"plans.yaml:{line_of(plans, 'ghost')}: unknown feature 'ghost' in tier BASIC (declare it under features:)",
        f"plans.yaml:{line_of(plans, 'cents_per_minute: -5')}: tiers/1/overage/cents_per_minute: -5 is less than the minimum of 0",
    ]


def test_files_with_the_same_name_are_told_apart(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.yaml").write_text(edit(ENDPOINTS, "auth: none", "auth: nobody"))
    (tmp_path / "b" / "x.yaml").write_text(edit(PLANS, "features: [pro.thing]", "features: [ghost]"))
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "a" / "x.yaml", tmp_path / "b" / "x.yaml", HANDLERS, AUTH)
    files = [p.file for p in exc.value.problems]
    assert str(tmp_path / "a" / "x.yaml") in files and str(tmp_path / "b" / "x.yaml") in files


def test_garbage_structure_never_crashes(tmp_path: Path) -> None:
    """Whatever the shape, the loader answers with problems, never a traceback."""
    for endpoints, plans in [
        ("[1, 2]\n", PLANS),
        ("just a string\n", "42\n"),
        (edit(ENDPOINTS, "routes:\n", "routes: 7\nxroutes:\n"), PLANS),
        (edit(ENDPOINTS, "  rate_limit: per_ip\n", "  rate_limit: 5\n"), edit(PLANS, "tiers:\n", "tiers: {}\nxtiers:\n")),
        (edit(ENDPOINTS, "defaults:\n", "defaults: []\nxdefaults:\n"), edit(PLANS, "no_plan:\n", "no_plan: 3\nxno_plan:\n")),
    ]:
        got = problems(tmp_path, endpoints=endpoints, plans=plans)
        assert got and all(":" in p for p in got)


def test_path_params_must_be_whole_segments(tmp_path: Path) -> None:
    endpoints = edit(ENDPOINTS, "path: /items/{id}", "path: /items/x{id")
    got = problems(tmp_path, endpoints=endpoints)
    assert len(got) == 1
    assert got[0].startswith(f"endpoints.yaml:{line_of(endpoints, 'x{id')}: routes/1/path: '/items/x{{id' does not match")
