"""Drift guard: every route of endpoints.yaml was called by at least one test of this run.

tests/conftest.py records the name of every route a request reached (CALLED_ROUTES) and moves this
test to the end of the run. A route added to endpoints.yaml without a test fails here. It judges
only a full run; with -k, -m, a subset of files or single tests it skips.
"""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import CALLED_ROUTES, FULL_RUN


def test_every_route_in_endpoints_yaml_was_called(request: pytest.FixtureRequest, config: Any) -> None:
    if not request.config.stash.get(FULL_RUN, False):
        pytest.skip("judged only on a full run of tests/ (no -k, -m, --lf, file subsets or node ids)")
    missing = sorted(route.name for route in config.routes if route.name not in CALLED_ROUTES)
    assert not missing, (
        f"{len(missing)} route(s) of endpoints.yaml were never called by any test: {', '.join(missing)}"
    )
