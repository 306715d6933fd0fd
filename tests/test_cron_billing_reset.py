"""GET /api/cron/billing-reset: due organizations start a new cycle exactly once."""
import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gateway import db as gdb
from gateway.billing_cycle import cycle_after, next_boundary
from gateway.store import billing
from tests.conftest import CRON_SECRET, assert_error

CRON = {"Authorization": f"Bearer {CRON_SECRET}"}


def utc(y, m, d, hh=0, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=timezone.utc)


@pytest.fixture
async def pool(db, database_url):
    p = await gdb.create_pool(database_url, max_size=4)
    yield p
    await p.close()


async def set_cycle(db, org_id, anchor, start, end, minutes="0"):
    await db.execute(
        """UPDATE organizations SET billing_anchor_day = $2, current_cycle_start = $3, current_cycle_end = $4,
                  minutes_used = $5 WHERE id = $1""",
        uuid.UUID(str(org_id)), anchor, start, end, Decimal(minutes),
    )


async def org_cycle(db, org_id):
    return await db.fetchrow(
        "SELECT current_cycle_start, current_cycle_end, minutes_used FROM organizations WHERE id = $1",
        uuid.UUID(str(org_id)),
    )


async def closed_cycles(db, org_id):
    return await db.fetch(
        "SELECT cycle_start, cycle_end, minutes_used FROM billing_cycles WHERE organization_id = $1 ORDER BY cycle_start",
        uuid.UUID(str(org_id)),
    )


async def make_orgs(db, n):
    """Organizations straight in the table (no accounts needed for a billing job)."""
    from gateway.store import organizations
    return [await organizations.create(db, f"Org {i}") for i in range(n)]


def recent_boundary(anchor):
    """(previous boundary, latest boundary <= now, next boundary) for ``anchor``."""
    now = datetime.now(timezone.utc)
    start, end = cycle_after(anchor, utc(2020, 1, anchor if anchor <= 28 else 28), now)
    previous = start - timedelta(days=31)
    return previous, start, end


# ---- auth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-secret"},
    {"Authorization": f"Basic {CRON_SECRET}"},
    {"Authorization": CRON_SECRET},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {CRON_SECRET}x"},
])
async def test_cron_auth_failures_change_nothing(client, db, headers):
    [org] = await make_orgs(db, 1)
    await set_cycle(db, org, 15, utc(2025, 1, 15), utc(2025, 2, 15), "12")
    resp = await client.get("/api/cron/billing-reset", headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert_error(body, "unauthorized")
    assert CRON_SECRET not in await resp.text()
    assert (await org_cycle(db, org))["minutes_used"] == Decimal("12")
    assert await closed_cycles(db, org) == []


async def test_cron_secret_unset_refuses_everything(make_client, db):
    client = await make_client(cron_secret=None)
    for headers in (CRON, {}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        resp = await client.get("/api/cron/billing-reset", headers=headers)
        assert resp.status == 401
        assert_error(await resp.json(), "unauthorized")


# ---- the job over HTTP --------------------------------------------------------------------------

async def test_reset_starts_the_next_cycle_and_records_the_closed_one(client, db, signup):
    due, fresh = await signup(), await signup()
    previous, start, end = recent_boundary(31)
    await set_cycle(db, due.org_id, 31, previous, start, "42.50")
    await db.execute("UPDATE organizations SET minutes_used = 9 WHERE id = $1", uuid.UUID(fresh.org_id))
    fresh_before = await org_cycle(db, fresh.org_id)

    resp = await client.get("/api/cron/billing-reset", headers=CRON)
    assert resp.status == 200
    assert await resp.json() == {"reset": 1}

    row = await org_cycle(db, due.org_id)
    assert (row["current_cycle_start"], row["current_cycle_end"]) == (start, end)
    assert row["current_cycle_end"] == next_boundary(31, start)
    assert row["minutes_used"] == 0
    assert [tuple(r) for r in await closed_cycles(db, due.org_id)] == [(previous, start, Decimal("42.50"))]
    # An organization whose cycle has not ended is untouched.
    assert await org_cycle(db, fresh.org_id) == fresh_before
    assert await closed_cycles(db, fresh.org_id) == []

    # Running again resets nothing; minutes counted since then stay.
    await db.execute("UPDATE organizations SET minutes_used = 7 WHERE id = $1", uuid.UUID(due.org_id))
    resp = await client.get("/api/cron/billing-reset", headers=CRON)
    assert await resp.json() == {"reset": 0}
    assert (await org_cycle(db, due.org_id))["minutes_used"] == Decimal("7")
    assert len(await closed_cycles(db, due.org_id)) == 1


async def test_missed_cycles_catch_up_to_the_one_containing_now(client, db):
    [org] = await make_orgs(db, 1)
    await set_cycle(db, org, 31, utc(2024, 12, 31), utc(2025, 1, 31), "300")
    resp = await client.get("/api/cron/billing-reset", headers=CRON)
    assert await resp.json() == {"reset": 1}
    now = datetime.now(timezone.utc)
    row = await org_cycle(db, org)
    assert row["current_cycle_start"] <= now < row["current_cycle_end"]
    assert row["current_cycle_end"] == next_boundary(31, row["current_cycle_start"])
    assert row["current_cycle_start"].day in (28, 29, 30, 31)
    # One record spanning the stretch the counter covered, so no minute is dropped or double-counted.
    assert [tuple(r) for r in await closed_cycles(db, org)] == [(utc(2024, 12, 31), row["current_cycle_start"], Decimal("300"))]


async def test_two_concurrent_http_runs_reset_once(client, db):
    orgs = await make_orgs(db, 6)
    for i, org in enumerate(orgs):
        await set_cycle(db, org, 10, utc(2025, 5, 10), utc(2025, 6, 10), str(i + 1))
    first, second = await asyncio.gather(
        client.get("/api/cron/billing-reset", headers=CRON),
        client.get("/api/cron/billing-reset", headers=CRON),
    )
    assert first.status == second.status == 200
    assert (await first.json())["reset"] + (await second.json())["reset"] == 6
    for i, org in enumerate(orgs):
        rows = await closed_cycles(db, org)
        assert [(r["cycle_start"], r["minutes_used"]) for r in rows] == [(utc(2025, 5, 10), Decimal(i + 1))]
        assert (await org_cycle(db, org))["minutes_used"] == 0
    assert await db.fetchval("SELECT count(*) FROM billing_cycles") == 6


# ---- the job called directly (what a second replica would do) --------------------------------------

async def test_two_concurrent_direct_runs_reset_once(pool, db):
    orgs = await make_orgs(db, 8)
    for org in orgs:
        await set_cycle(db, org, 31, utc(2025, 1, 31), utc(2025, 2, 28), "5")
    now = utc(2025, 2, 28, 0, 1)
    counts = await asyncio.gather(*(billing.reset_due_cycles(pool, now) for _ in range(3)))
    assert sum(counts) == 8
    assert await db.fetchval("SELECT count(*) FROM billing_cycles") == 8
    assert await billing.reset_due_cycles(pool, now) == 0


async def test_stale_runner_changes_nothing(pool, db):
    """A runner that read the due list before another one reset the org: the conditional UPDATE refuses."""
    [org] = await make_orgs(db, 1)
    await set_cycle(db, org, 31, utc(2025, 1, 31), utc(2025, 2, 28), "5")
    now = utc(2025, 3, 1)
    assert await billing.reset_one(pool, org, 31, utc(2025, 2, 28), now) is True
    await db.execute("UPDATE organizations SET minutes_used = 3 WHERE id = $1", org)
    assert await billing.reset_one(pool, org, 31, utc(2025, 2, 28), now) is False
    row = await org_cycle(db, org)
    assert (row["current_cycle_start"], row["current_cycle_end"], row["minutes_used"]) == (utc(2025, 2, 28), utc(2025, 3, 31), 3)
    assert len(await closed_cycles(db, org)) == 1


async def test_anchor_31_follows_short_months(pool, db):
    [org] = await make_orgs(db, 1)
    await set_cycle(db, org, 31, utc(2024, 1, 31), utc(2024, 2, 29), "1")  # leap year
    expected = [
        (utc(2024, 2, 29, 0, 1), utc(2024, 2, 29), utc(2024, 3, 31)),
        (utc(2024, 3, 31, 0, 1), utc(2024, 3, 31), utc(2024, 4, 30)),
        (utc(2024, 4, 30, 0, 1), utc(2024, 4, 30), utc(2024, 5, 31)),
    ]
    for now, start, end in expected:
        assert await billing.reset_due_cycles(pool, now) == 1
        row = await org_cycle(db, org)
        assert (row["current_cycle_start"], row["current_cycle_end"]) == (start, end)
        assert await billing.reset_due_cycles(pool, now) == 0  # rerun the same day
    await set_cycle(db, org, 31, utc(2024, 12, 31), utc(2025, 1, 31))
    assert await billing.reset_due_cycles(pool, utc(2025, 1, 31, 0, 1)) == 1
    assert (await org_cycle(db, org))["current_cycle_end"] == utc(2025, 2, 28)
    assert [r["cycle_start"] for r in await closed_cycles(db, org)] == [
        utc(2024, 1, 31), utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 12, 31)]
