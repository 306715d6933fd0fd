"""Reloading endpoints.yaml and plans.yaml without a restart: all or nothing, in-flight requests unaffected."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import read_config
from gateway.config import ConfigError
from gateway.config_diff import diff_configs
from gateway.pipeline import SERVICES
from tests.test_pipeline import config_with


@pytest.fixture
def files(settings: Any, tmp_path: Path) -> Any:
    """Copies of the real files that a test may edit, and settings pointing at them."""
    endpoints, plans = tmp_path / "endpoints.yaml", tmp_path / "plans.yaml"
    endpoints.write_text(settings.endpoints_file.read_text())
    plans.write_text(settings.plans_file.read_text())
    return dataclasses.replace(settings, endpoints_file=endpoints, plans_file=plans)


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def tier(data: dict, name: str) -> dict:
    return next(t for t in data["tiers"] if t["name"] == name)


def move_embed_tokens_to_starter(data: dict) -> None:
    tier(data, "PRO")["features"].remove("embed_tokens")
    tier(data, "STARTER")["features"].append("embed_tokens")


def _sighup() -> None:
    # Without a handler the default action would end the test run: make sure the app installed one.
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, None), "no SIGHUP handler installed"
    os.kill(os.getpid(), signal.SIGHUP)


async def _settle() -> None:
    for _ in range(5):  # the loop runs the handler on its next turn
        await asyncio.sleep(0.01)


async def test_sighup_rereads_the_files(make_client: Any, signup: Any, files: Any) -> None:
    tenant = await signup(plan="STARTER")
    client = await make_client(endpoints_file=files.endpoints_file, plans_file=files.plans_file)
    services = client.server.app[SERVICES]
    before = services.config
    resp = await client.get("/api/embed-token", headers=tenant.auth)
    assert resp.status == 403 and (await resp.json())["requiredPlan"] == "PRO"

    edit_yaml(files.plans_file, move_embed_tokens_to_starter)
    _sighup()
    await _settle()

    assert services.config is not before
    assert services.config.plans.required_tier("embed_tokens") == "STARTER"
    resp = await client.get("/api/embed-token", headers=tenant.auth)
    assert resp.status != 403, await resp.text()


async def test_sighup_with_an_invalid_file_changes_nothing(make_client: Any, signup: Any, files: Any) -> None:
    tenant = await signup(plan="STARTER")
    client = await make_client(endpoints_file=files.endpoints_file, plans_file=files.plans_file)
    services = client.server.app[SERVICES]
    before = services.config

    # A valid plans.yaml edit together with a broken endpoints.yaml: neither is applied.
    edit_yaml(files.plans_file, move_embed_tokens_to_starter)
    files.endpoints_file.write_text(files.endpoints_file.read_text().replace("handler: health.readyz", "handler: health.nope"))
    _sighup()
    await _settle()

    assert services.config is before
    resp = await client.get("/api/embed-token", headers=tenant.auth)
    assert resp.status == 403 and (await resp.json())["requiredPlan"] == "PRO"
    assert (await client.get("/readyz")).status == 200


async def test_reload_config_swaps_the_reference_and_reports_changes(make_client: Any, files: Any) -> None:
    client = await make_client(endpoints_file=files.endpoints_file, plans_file=files.plans_file)
    services = client.server.app[SERVICES]
    before = services.config
    assert services.reload_config() == []  # nothing changed on disk: a new object, no differences
    assert services.config is not before
    edit_yaml(files.plans_file, move_embed_tokens_to_starter)
    changes = services.reload_config()
    assert "route GET /api/embed-token: requiredPlan PRO -> STARTER" in changes
    current = services.config
    files.plans_file.write_text("version: 1\n")
    with pytest.raises(ConfigError):
        services.reload_config()
    assert services.config is current


async def test_a_reload_event_from_another_process(make_client: Any, files: Any) -> None:
    client = await make_client(endpoints_file=files.endpoints_file, plans_file=files.plans_file)
    services = client.server.app[SERVICES]
    before = services.config
    edit_yaml(files.plans_file, move_embed_tokens_to_starter)
    services.on_event({"kind": "config_reload", "pid": os.getpid()})  # our own: already reloaded
    assert services.config is before
    services.on_event({"kind": "config_reload", "pid": os.getpid() + 1})
    assert services.config.plans.required_tier("embed_tokens") == "STARTER"
    files.plans_file.write_text("not: [valid\n")
    current = services.config
    services.on_event({"kind": "config_reload", "pid": os.getpid() + 1})  # logged, not raised
    assert services.config is current


async def test_in_flight_requests_finish_on_the_config_they_started_with(make_client: Any, files: Any) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: Any) -> dict:
        started.set()
        await release.wait()
        return {"requiredPlan": ctx.config.plans.required_tier("embed_tokens"), "same": ctx.config is original}

    original = config_with(files, **{"health.healthz": slow})
    client = await make_client(config_override=original, endpoints_file=files.endpoints_file, plans_file=files.plans_file)
    services = client.server.app[SERVICES]
    in_flight = asyncio.create_task(client.get("/healthz"))
    await asyncio.wait_for(started.wait(), 5)

    edit_yaml(files.plans_file, move_embed_tokens_to_starter)
    services.reload_config()
    assert services.config is not original
    # A request that starts now sees the new config (and the real health handler).
    assert await (await client.get("/healthz")).json() == {"status": "ok"}

    release.set()
    resp = await in_flight
    assert await resp.json() == {"requiredPlan": "PRO", "same": True}


# ---- config_diff -------------------------------------------------------------------------------------

def test_diff_reports_plan_moves_and_tier_changes(files: Any) -> None:
    old = read_config(files)

    def change(data: dict) -> None:
        move_embed_tokens_to_starter(data)
        tier(data, "STARTER")["features"].remove("kb.edit")
        tier(data, "ADVANCED")["features"].append("kb.edit")
        tier(data, "PRO")["monthly_price_cents"] = 20900
        data["no_plan"]["included_minutes"] = 10

    edit_yaml(files.plans_file, change)
    changes = diff_configs(old, read_config(files))
    assert "route GET /api/embed-token: requiredPlan PRO -> STARTER" in changes
    assert "route POST /api/embed-token: requiredPlan PRO -> STARTER" in changes
    assert "tier STARTER: gains embed_tokens" in changes
    assert "tier ADVANCED: gains embed_tokens" in changes  # tiers inherit
    assert "tier STARTER: loses kb.edit" in changes
    assert "tier PRO: monthly_price_cents 19900 -> 20900" in changes
    assert not [c for c in changes if c.startswith("tier PRO: gains") or c.startswith("tier ADVANCED: loses")]
    assert not [c for c in changes if "DELETE /api/embed-token" in c]  # not gated: nothing moved


def test_diff_reports_added_removed_and_changed_routes(files: Any) -> None:
    old = read_config(files)

    def change(data: dict) -> None:
        data["routes"].append({"name": "livez", "method": "GET", "path": "/livez", "handler": "health.healthz",
                               "auth": "none", "cors": "none", "rate_limit": None})
        register = next(r for r in data["routes"] if r["name"] == "auth.register")
        register["body_limit"] = 4096
        data["rate_limits"]["register_per_ip"]["limit"] = 5

    edit_yaml(files.endpoints_file, change)
    new = read_config(files)
    changes = diff_configs(old, new)
    assert "route GET /livez added" in changes
    assert "route POST /api/auth/register: bodyLimit 8192 -> 4096" in changes
    assert "rate limit register_per_ip: now 5 per 3600s by ip" in changes
    assert "route GET /livez removed" in diff_configs(new, old)
    assert diff_configs(old, old) == []


def test_diff_reports_tier_order_changes(files: Any) -> None:
    old = read_config(files)
    edit_yaml(files.plans_file, lambda data: data["tiers"].append(
        {**tier(data, "ENTERPRISE"), "name": "ULTIMATE", "features": []}))
    changes = diff_configs(old, read_config(files))
    assert "tiers ['STARTER', 'ADVANCED', 'PRO', 'ENTERPRISE'] -> ['STARTER', 'ADVANCED', 'PRO', 'ENTERPRISE', 'ULTIMATE']" in changes
