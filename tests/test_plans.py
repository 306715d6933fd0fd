"""plans.yaml's one rule (tiers inherit), and the feature gate that every gated route runs."""
from __future__ import annotations

from typing import Any

import pytest

from gateway.plans import build_plans
from tests.conftest import assert_error

DATA = {
    "features": {"a": "A", "b": "B", "c": "C", "orphan": "granted by no tier"},
    "no_plan": {"features": ["a"], "included_minutes": 5},
    "tiers": [
        {"name": "LOW", "features": ["b"], "included_minutes": 10, "monthly_price_cents": 1,
         "overage": {"enabled": False, "cents_per_minute": 0}, "stripe_price_id": "price_low"},
        {"name": "MID", "features": [], "included_minutes": 20, "monthly_price_cents": 2,
         "overage": {"enabled": True, "cents_per_minute": 3}, "stripe_price_id": "price_mid", "self_serve": False},
        {"name": "HIGH", "features": ["c"], "included_minutes": 30, "monthly_price_cents": 3,
         "overage": {"enabled": True, "cents_per_minute": 2}, "stripe_price_id": None},
    ],
}


def test_required_tier_is_the_lowest_tier_with_the_feature() -> None:
    plans = build_plans(DATA)
    assert plans.required_tier("a") == "LOW"  # no_plan's features are in every tier
    assert plans.required_tier("b") == "LOW"
    assert plans.required_tier("c") == "HIGH"
    assert plans.required_tier("orphan") is None
    assert plans.required_tier("undeclared") is None


def test_has_feature_for_tiers_and_for_no_plan() -> None:
    plans = build_plans(DATA)
    assert plans.has_feature(None, "a") and not plans.has_feature(None, "b")
    assert plans.has_feature("LOW", "b") and not plans.has_feature("LOW", "c")
    assert plans.has_feature("MID", "b")  # inherited from LOW
    assert plans.has_feature("HIGH", "a") and plans.has_feature("HIGH", "b") and plans.has_feature("HIGH", "c")
    # An unknown plan name (e.g. a tier removed from plans.yaml) is treated like no plan.
    assert plans.features_of("GONE") == plans.no_plan_features == {"a"}
    assert plans.included_minutes(None) == 5 and plans.included_minutes("GONE") == 5 and plans.included_minutes("MID") == 20
    mid = plans.tier("MID")
    assert mid is not None and (mid.rank, mid.overage_enabled, mid.overage_cents_per_minute, mid.self_serve) == (1, True, 3, False)
    assert plans.tier("HIGH").stripe_price_id is None and plans.tier("LOW").self_serve is True  # type: ignore[union-attr]
    assert plans.tier_names() == ["LOW", "MID", "HIGH"]


def test_real_plans_embed_tokens_needs_pro(config: Any) -> None:
    plans = config.plans
    assert plans.required_tier("embed_tokens") == "PRO"
    assert [t for t in plans.tier_names() if plans.has_feature(t, "embed_tokens")] == ["PRO", "ENTERPRISE"]
    assert not plans.has_feature(None, "embed_tokens")


@pytest.mark.parametrize("plan", [None, "STARTER", "ADVANCED"])
async def test_gated_route_refuses_lower_plans(client: Any, signup: Any, plan: str | None) -> None:
    tenant = await signup(plan=plan)
    resp = await client.get("/api/embed-token", headers=tenant.auth)
    assert resp.status == 403
    body = await resp.json()
    assert_error(body, "plan_upgrade_required")
    assert body["requiredPlan"] == "PRO"
    assert body["feature"] == "embed_tokens"
    assert body["currentPlan"] == plan
    assert "PRO" in body["error"]
    assert resp.headers["X-Request-Id"]


@pytest.mark.parametrize("plan", ["PRO", "ENTERPRISE"])
async def test_gated_route_passes_for_that_tier_and_higher(client: Any, signup: Any, plan: str) -> None:
    tenant = await signup(plan=plan)
    resp = await client.get("/api/embed-token", headers=tenant.auth)
    # The handler itself is another engineer's; the gate only has to let the request through.
    assert resp.status != 403, await resp.text()
    assert resp.status < 500 or resp.status == 501


async def test_gate_runs_after_auth(client: Any, db: Any) -> None:
    """No cookie: 401 (who are you), not 403 (what plan are you on)."""
    resp = await client.get("/api/embed-token")
    assert resp.status == 401
    assert_error(await resp.json(), "unauthorized")


async def test_ungated_route_on_the_same_path_is_not_gated(client: Any, signup: Any) -> None:
    """DELETE /api/embed-token has no feature, so a downgraded organization can still revoke."""
    tenant = await signup()
    resp = await client.delete("/api/embed-token?id=00000000-0000-0000-0000-000000000000", headers=tenant.auth)
    assert resp.status != 403
