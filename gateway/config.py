"""endpoints.yaml + plans.yaml -> one immutable Config, or every problem at once.

Order: strict YAML (duplicate keys), JSON Schema of each file (shipped in policies/schemas), then
cross-checks that need both files and the code (handlers, auth methods, features, policies,
duplicate method+path, handlers no route uses). Each problem is ``file:line: message``.
``gateway check`` and reload run exactly this function.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from policies.schema_dialect import RequestValidator
from gateway.plans import Plans, build_plans
from gateway.yamlsource import Problem, line_of, load_yaml

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "policies" / "schemas"
_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


class ConfigError(Exception):
    """Every problem found, de-duplicated and in file, line order (what an operator fixes top-down)."""

    def __init__(self, problems: list[Problem]) -> None:
        problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.message))
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class CorsPolicy:
    name: str
    allow_origins: str | tuple[str, ...]  # "app" | "any" | "none" | exact origins
    credentials: bool
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age: int


@dataclass(frozen=True)
class RateLimit:
    name: str
    key: str  # ip | user | organization | token | body.<field>
    limit: int
    per_seconds: int

    @property
    def before_auth(self) -> bool:
        """Keys known before authentication are counted first, so guessing costs quota too."""
        return self.key in ("ip", "token") or self.key.startswith("body.")


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    handler_name: str
    handler: Callable[..., Any]
    auth: str
    feature: str | None
    cors: CorsPolicy
    rate_limits: tuple[RateLimit, ...]
    body_limit: int
    content_types: tuple[str, ...]
    query_validator: Draft202012Validator | None
    body_validator: Draft202012Validator | None
    pattern: re.Pattern[str] | None  # None for a path without {params}
    line: int = 0
    empty_query_ok: bool = True  # decided once here, so a request without a query skips validation
    # Small bodies already found valid for this route (validation is a pure function of schema and
    # bytes; a widget's visitors all send the same body). Lives and dies with this config.
    valid_bodies: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)

    @property
    def takes_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Config:
    routes: tuple[Route, ...]
    plans: Plans
    cors_policies: Mapping[str, CorsPolicy]
    rate_limits: Mapping[str, RateLimit]
    static: Mapping[str, Mapping[str, Route]] = field(repr=False)  # path -> method -> route
    templated: tuple[tuple[re.Pattern[str], Mapping[str, Route]], ...] = field(repr=False)

    def match(self, path: str) -> tuple[Mapping[str, Route] | None, dict[str, str]]:
        """Routes at ``path`` by method, plus path parameters."""
        by_method = self.static.get(path)
        if by_method is not None:
            return by_method, {}
        for pattern, routes in self.templated:
            m = pattern.fullmatch(path)
            if m:
                return routes, m.groupdict()
        return None, {}

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)


def _schema_problems(data: Any, schema_file: str, display: str) -> list[Problem]:
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    validator = Draft202012Validator(schema)
    problems = []
    for err in validator.iter_errors(data):
        path = list(err.absolute_path)
        where = "/".join(str(p) for p in path) or "(top level)"
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            # Point at each unexpected key itself, not at the start of the mapping holding it.
            known = err.schema.get("properties", {})
            for key in [k for k in err.instance if k not in known]:
                problems.append(Problem(display, line_of(data, [*path, key]), f"{where}: unknown property {key!r}"))
            continue
        problems.append(Problem(display, line_of(data, path), f"{where}: {err.message}"))
    return problems


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_config(
    endpoints_path: Path,
    plans_path: Path,
    handlers: Mapping[str, Callable[..., Any]],
    auth_methods: Collection[str],
) -> Config:
    """Load, validate and compile both files; raise ConfigError listing every problem."""
    ep_name, pl_name = endpoints_path.name, plans_path.name
    if ep_name == pl_name:  # two files called the same: only the full paths tell the problems apart
        ep_name, pl_name = str(endpoints_path), str(plans_path)
    endpoints, problems = load_yaml(endpoints_path, ep_name)
    plans_data, plan_problems = load_yaml(plans_path, pl_name)
    problems += plan_problems
    for data, schema_file, name in ((endpoints, "endpoints.schema.json", ep_name), (plans_data, "plans.schema.json", pl_name)):
        if data is not None:
            problems += _schema_problems(data, schema_file, name)
        elif not any(p.file == name for p in problems):  # an empty file
            problems.append(Problem(name, 1, "the file is empty; expected a mapping (see the shipped file)"))
    if not isinstance(endpoints, dict) or not isinstance(plans_data, dict):
        raise ConfigError(problems)
    # Cross-checks run even when the schema found problems, so one run reports everything; they
    # skip what is too malformed to look at (the schema problem already names it).
    try:
        problems += _check_plans(plans_data, pl_name)
    except (KeyError, TypeError, AttributeError):
        pass
    try:
        return _build(endpoints, plans_data, ep_name, pl_name, handlers, auth_methods, problems)
    except (KeyError, TypeError, AttributeError, ValueError, re.error):
        # Too malformed to cross-check; the schema problems say why. Never an empty report.
        raise ConfigError(problems or [Problem(ep_name, 1, "cannot be checked further (malformed structure)")]) from None


def _build(endpoints: Any, plans_data: Any, ep_name: str, pl_name: str, handlers: Mapping[str, Callable[..., Any]],
           auth_methods: Collection[str], problems: list[Problem]) -> Config:
    cors = {
        name: CorsPolicy(
            name=name,
            allow_origins=p["allow_origins"] if isinstance(p["allow_origins"], str) else tuple(p["allow_origins"]),
            credentials=p.get("credentials", False),
            allow_headers=tuple(h.lower() for h in p.get("allow_headers", ["content-type"])),
            expose_headers=tuple(p.get("expose_headers", ["x-request-id", "retry-after"])),
            max_age=p.get("max_age", 600),
        )
        for name, p in (endpoints.get("cors_policies") or {}).items()
        if isinstance(p, dict) and isinstance(p.get("allow_origins"), (str, list))
    }
    limits = {
        name: RateLimit(name=name, key=p["key"], limit=p["limit"], per_seconds=p["per_seconds"])
        for name, p in (endpoints.get("rate_limits") or {}).items()
        if isinstance(p, dict) and {"key", "limit", "per_seconds"} <= p.keys()
    }
    defaults = endpoints.get("defaults") or {}
    defaults.setdefault("cors", "none")
    defaults.setdefault("rate_limit", None)
    defaults.setdefault("body_limit", 65536)
    if defaults["cors"] not in cors:
        problems.append(Problem(ep_name, line_of(endpoints, ["defaults", "cors"]), f"unknown CORS policy {defaults['cors']!r}"))
    for name in _as_list(defaults["rate_limit"]):
        if name not in limits:
            problems.append(Problem(ep_name, line_of(endpoints, ["defaults", "rate_limit"]), f"unknown rate limit {name!r}"))

    routes: list[Route] = []
    seen: dict[tuple[str, str], int] = {}
    names: dict[str, int] = {}
    used_handlers: set[str] = set()
    declared_features = plans_data.get("features") or {}
    for i, raw in enumerate(endpoints.get("routes") or []):
        at = lambda *keys: line_of(endpoints, ["routes", i, *keys])  # noqa: E731
        if isinstance(raw, dict) and isinstance(raw.get("handler"), str):
            used_handlers.add(raw["handler"])  # even on a broken route: "no route uses it" would mislead
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("name", "method", "path", "handler", "auth")):
            continue  # the schema problem already says what is missing
        route_problems: list[Problem] = []
        key = (raw["method"], _PARAM.sub("{}", raw["path"]))
        if key in seen:
            route_problems.append(Problem(ep_name, at("path"), f"duplicate route {raw['method']} {raw['path']} (first on line {seen[key]})"))
        seen.setdefault(key, at())
        if raw["name"] in names:
            route_problems.append(Problem(ep_name, at("name"), f"duplicate route name {raw['name']!r} (first on line {names[raw['name']]})"))
        names.setdefault(raw["name"], at())
        handler = handlers.get(raw["handler"])
        if handler is None:
            route_problems.append(Problem(ep_name, at("handler"), f"unknown handler {raw['handler']!r}"))
        if raw["auth"] not in auth_methods:
            route_problems.append(Problem(ep_name, at("auth"), f"unknown auth method {raw['auth']!r} (known: {', '.join(sorted(auth_methods))})"))
        feature = raw.get("feature")
        if feature is not None and feature not in declared_features:
            route_problems.append(Problem(ep_name, at("feature"), f"unknown feature {feature!r} (not declared in {pl_name})"))
        cors_name = raw.get("cors", defaults["cors"])
        if cors_name not in cors:
            route_problems.append(Problem(ep_name, at("cors"), f"unknown CORS policy {cors_name!r}"))
        params = _PARAM.findall(raw["path"])
        for name in sorted({p for p in params if params.count(p) > 1}):
            route_problems.append(Problem(ep_name, at("path"), f"path parameter {{{name}}} appears more than once"))
        limit_names = _as_list(raw["rate_limit"] if "rate_limit" in raw else defaults["rate_limit"])
        for name in sorted({n for n in limit_names if limit_names.count(n) > 1}):
            # One request would count twice in one statement (Postgres refuses that: a 500 per call).
            route_problems.append(Problem(ep_name, at("rate_limit"), f"rate limit {name!r} is listed more than once"))
        for name in limit_names:
            if name not in limits:
                route_problems.append(Problem(ep_name, at("rate_limit"), f"unknown rate limit {name!r}"))
            elif limits[name].key == "token" and raw["auth"] != "embed_token":
                route_problems.append(Problem(ep_name, at("rate_limit"), f"rate limit {name!r} counts per token, but the route's auth is {raw['auth']!r}"))
        validators = {}
        for part in ("query", "body"):
            if part in raw:
                try:
                    Draft202012Validator.check_schema(raw[part])
                    validators[part] = RequestValidator(raw[part], format_checker=FormatChecker())
                except SchemaError as exc:
                    where = "/".join(str(p) for p in exc.path)
                    route_problems.append(Problem(ep_name, line_of(endpoints, ["routes", i, part, *exc.path]), f"{part} schema{' at ' + where if where else ''}: {exc.message}"))
        if "body" in raw and raw["method"] in ("GET", "HEAD"):
            route_problems.append(Problem(ep_name, at("body"), f"{raw['method']} routes take no body"))
        problems += route_problems
        if route_problems:
            continue
        pattern = None
        if params:
            regex = _PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(raw["path"]).replace(r"\{", "{").replace(r"\}", "}"))
            pattern = re.compile(regex)
        routes.append(
            Route(
                name=raw["name"],
                method=raw["method"],
                path=raw["path"],
                handler_name=raw["handler"],
                handler=handler,  # type: ignore[arg-type]
                auth=raw["auth"],
                feature=feature,
                cors=cors[cors_name],
                rate_limits=tuple(limits[n] for n in limit_names),
                body_limit=raw.get("body_limit", defaults["body_limit"]),
                content_types=tuple(raw.get("content_types", ["application/json"])),
                query_validator=validators.get("query"),
                body_validator=validators.get("body"),
                pattern=pattern,
                line=at(),
                empty_query_ok=validators.get("query") is None or validators["query"].is_valid({}),
            )
        )
    for name in sorted(set(handlers) - used_handlers):
        problems.append(Problem(ep_name, line_of(endpoints, ["routes"]), f"handler {name!r} exists in the code but no route uses it"))
    if problems:
        raise ConfigError(problems)

    static: dict[str, dict[str, Route]] = {}
    templated: dict[str, dict[str, Route]] = {}
    patterns: dict[str, re.Pattern[str]] = {}
    for r in routes:
        if r.pattern is None:
            static.setdefault(r.path, {})[r.method] = r
        else:
            templated.setdefault(r.pattern.pattern, {})[r.method] = r
            patterns[r.pattern.pattern] = r.pattern
    # Read-only views: a reload swaps the whole Config, nothing edits one in place.
    return Config(
        routes=tuple(routes),
        plans=build_plans(plans_data),
        cors_policies=MappingProxyType(cors),
        rate_limits=MappingProxyType(limits),
        static=MappingProxyType({path: MappingProxyType(by_method) for path, by_method in static.items()}),
        templated=tuple((patterns[k], MappingProxyType(v)) for k, v in templated.items()),
    )


def _check_plans(data: Any, display: str) -> list[Problem]:
    problems = []
    declared = data["features"]
    seen_tiers: dict[str, int] = {}
    granted: dict[str, str] = {}
    for i, tier in enumerate(data["tiers"]):
        line = line_of(data, ["tiers", i, "name"])
        if tier["name"] in seen_tiers:
            problems.append(Problem(display, line, f"duplicate tier {tier['name']!r} (first on line {seen_tiers[tier['name']]})"))
        seen_tiers.setdefault(tier["name"], line)
        for j, feature in enumerate(tier["features"]):
            fline = line_of(data, ["tiers", i, "features", j])
            if feature not in declared:
                problems.append(Problem(display, fline, f"unknown feature {feature!r} in tier {tier['name']} (declare it under features:)"))
            elif feature in granted:
                problems.append(Problem(display, fline, f"feature {feature!r} is already granted by the lower tier {granted[feature]} (tiers inherit)"))
            granted.setdefault(feature, tier["name"])
    for j, feature in enumerate(data["no_plan"]["features"]):
        if feature not in declared:
            problems.append(Problem(display, line_of(data, ["no_plan", "features", j]), f"unknown feature {feature!r} in no_plan"))
    return problems
