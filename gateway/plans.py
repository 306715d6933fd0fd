"""The tiers of plans.yaml as an immutable value, and the one feature rule everybody asks.

Both the route gate and every ``canEdit`` flag call :meth:`Plans.has_feature`, so the rule
"a tier has its own features plus those of every tier below it" lives in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class Tier:
    name: str
    rank: int
    description: str
    own_features: frozenset[str]
    features: frozenset[str]  # cumulative: own plus every lower tier's
    included_minutes: int
    monthly_price_cents: int
    overage_enabled: bool
    overage_cents_per_minute: int
    stripe_price_id: str | None
    self_serve: bool


@dataclass(frozen=True)
class Plans:
    features: Mapping[str, str]  # name -> description (read-only)
    tiers: tuple[Tier, ...]
    no_plan_features: frozenset[str]
    no_plan_minutes: int

    def tier(self, name: str | None) -> Tier | None:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        return None

    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def features_of(self, plan: str | None) -> frozenset[str]:
        tier = self.tier(plan)
        return tier.features if tier else self.no_plan_features

    def has_feature(self, plan: str | None, feature: str) -> bool:
        return feature in self.features_of(plan)

    def required_tier(self, feature: str) -> str | None:
        """The lowest tier that has ``feature`` (None when no tier has it)."""
        for tier in self.tiers:
            if feature in tier.features:
                return tier.name
        return None

    def included_minutes(self, plan: str | None) -> int:
        tier = self.tier(plan)
        return tier.included_minutes if tier else self.no_plan_minutes


def build_plans(data: dict) -> Plans:
    """Build from already schema-validated and cross-checked data."""
    tiers: list[Tier] = []
    # Paying never takes a feature away: every tier starts from what no plan already has.
    cumulative: frozenset[str] = frozenset(data["no_plan"]["features"])
    for rank, raw in enumerate(data["tiers"]):
        own = frozenset(raw["features"])
        cumulative = cumulative | own
        tiers.append(
            Tier(
                name=raw["name"],
                rank=rank,
                description=raw.get("description", ""),
                own_features=own,
                features=cumulative,
                included_minutes=raw["included_minutes"],
                monthly_price_cents=raw["monthly_price_cents"],
                overage_enabled=raw["overage"]["enabled"],
                overage_cents_per_minute=raw["overage"]["cents_per_minute"],
                stripe_price_id=raw["stripe_price_id"],
                self_serve=raw.get("self_serve", True),
            )
        )
    return Plans(
        features=MappingProxyType(dict(data["features"])),
        tiers=tuple(tiers),
        no_plan_features=frozenset(data["no_plan"]["features"]),
        no_plan_minutes=data["no_plan"]["included_minutes"],
    )
