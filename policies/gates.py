"""The feature gate: a route names a feature, plans.yaml says which tiers have it."""
from __future__ import annotations

from gateway.context import Ctx
from gateway.errors import ApiError


def check_feature(ctx: Ctx) -> None:
    feature = ctx.route.feature
    if feature is None or ctx.can(feature):
        return
    required = ctx.config.plans.required_tier(feature)
    if required is None:
        message = f"{feature} is not available on any plan"
    else:
        message = f"This needs the {required} plan or higher"
    raise ApiError(403, message, "plan_upgrade_required", requiredPlan=required, feature=feature,
                   currentPlan=ctx.plan)
