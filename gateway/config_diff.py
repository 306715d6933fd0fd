"""What a reload changed, in words an operator can check at a glance."""
from __future__ import annotations

from gateway.config import Config, Route


def _route_view(config: Config, route: Route) -> dict[str, object]:
    return {
        "auth": route.auth,
        "feature": route.feature,
        "requiredPlan": config.plans.required_tier(route.feature) if route.feature else None,
        "cors": route.cors.name,
        "rateLimits": [r.name for r in route.rate_limits],
        "bodyLimit": route.body_limit,
        "handler": route.handler_name,
    }


def diff_configs(old: Config, new: Config) -> list[str]:
    changes: list[str] = []
    old_routes = {(r.method, r.path): r for r in old.routes}
    new_routes = {(r.method, r.path): r for r in new.routes}
    for key in sorted(new_routes.keys() - old_routes.keys()):
        changes.append(f"route {key[0]} {key[1]} added")
    for key in sorted(old_routes.keys() - new_routes.keys()):
        changes.append(f"route {key[0]} {key[1]} removed")
    for key in sorted(old_routes.keys() & new_routes.keys()):
        before, after = _route_view(old, old_routes[key]), _route_view(new, new_routes[key])
        for field, value in after.items():
            if before[field] != value:
                changes.append(f"route {key[0]} {key[1]}: {field} {before[field]} -> {value}")
    old_tiers = {t.name: t for t in old.plans.tiers}
    new_tiers = {t.name: t for t in new.plans.tiers}
    if list(old_tiers) != list(new_tiers):
        changes.append(f"tiers {list(old_tiers)} -> {list(new_tiers)}")
    for name in new_tiers.keys() & old_tiers.keys():
        a, b = old_tiers[name], new_tiers[name]
        for feature in sorted(b.features - a.features):
            changes.append(f"tier {name}: gains {feature}")
        for feature in sorted(a.features - b.features):
            changes.append(f"tier {name}: loses {feature}")
        for field in ("included_minutes", "monthly_price_cents", "overage_enabled", "overage_cents_per_minute", "stripe_price_id"):
            if getattr(a, field) != getattr(b, field):
                changes.append(f"tier {name}: {field} {getattr(a, field)} -> {getattr(b, field)}")
    if old.plans.no_plan_features != new.plans.no_plan_features:
        changes.append(f"no plan: features {sorted(old.plans.no_plan_features)} -> {sorted(new.plans.no_plan_features)}")
    for name in sorted(new.rate_limits.keys() & old.rate_limits.keys()):
        if old.rate_limits[name] != new.rate_limits[name]:
            r = new.rate_limits[name]
            changes.append(f"rate limit {name}: now {r.limit} per {r.per_seconds}s by {r.key}")
    return changes
