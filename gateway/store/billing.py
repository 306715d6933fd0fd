"""Billing cycles: closing the cycle that ended and starting the next one, exactly once.

Correctness comes from the conditional UPDATE (``WHERE current_cycle_end = <the end we read>``)
inside a transaction, and from the unique (organization_id, cycle_start) of billing_cycles: a
second runner, a rerun, or another replica finds the row already moved on and changes nothing.
The advisory lock only spares a concurrent runner the wasted work of waiting on the row lock.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import structlog

from gateway.billing_cycle import cycle_after

log = structlog.get_logger("gateway.billing")

# Advisory lock namespace (first key of the two-int form) for "resetting this organization's cycle".
_RESET_LOCK_CLASS = 7_240_101


async def due_organizations(conn: Any, now: datetime) -> list[Any]:
    return await conn.fetch(
        """SELECT id, billing_anchor_day, current_cycle_end FROM organizations
            WHERE current_cycle_end <= $1 ORDER BY current_cycle_end, id""",
        now,
    )


async def reset_one(pool: Any, org_id: UUID, anchor_day: int, old_end: datetime, now: datetime) -> bool:
    """Close the cycle ending at ``old_end`` and start the next; False when someone else already did."""
    new_start, new_end = cycle_after(anchor_day, old_end, now)
    async with pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _RESET_LOCK_CLASS, str(org_id))
        if not locked:
            return False  # another runner is resetting this organization right now
        # FOR UPDATE re-reads the row after any concurrent writer commits, so the minutes we record
        # include every increment committed before the reset, and none is lost after it.
        closed = await conn.fetchrow(
            """WITH old AS (
                   SELECT id, current_cycle_start, minutes_used FROM organizations
                    WHERE id = $1 AND current_cycle_end = $2 FOR UPDATE)
               UPDATE organizations o
                  SET current_cycle_start = $3, current_cycle_end = $4, minutes_used = 0, updated_at = now()
                 FROM old WHERE o.id = old.id
            RETURNING old.current_cycle_start AS cycle_start, old.minutes_used""",
            org_id, old_end, new_start, new_end,
        )
        if closed is None:
            return False  # the cycle was already reset (rerun or another replica)
        # The closed row spans up to the new start: when the job missed boundaries, the counter
        # covered that whole stretch, so the record says so instead of splitting it arbitrarily.
        status = await conn.execute(
            """INSERT INTO billing_cycles (organization_id, cycle_start, cycle_end, minutes_used)
               VALUES ($1, $2, $3, $4) ON CONFLICT (organization_id, cycle_start) DO NOTHING""",
            org_id, closed["cycle_start"], new_start, closed["minutes_used"],
        )
        if status.endswith(" 0"):
            # Only possible if someone moved the cycle back by hand; keep the first record.
            log.warning("billing_cycle.already_recorded", organization_id=str(org_id), cycle_start=closed["cycle_start"].isoformat())
        return True


async def reset_due_cycles(pool: Any, now: datetime | None = None) -> int:
    """Start a new cycle for every organization whose cycle has ended; returns how many were reset.

    ``now`` defaults to the database clock, the one every replica shares.
    """
    if now is None:
        now = await pool.fetchval("SELECT now()")
    reset = 0
    for org in await due_organizations(pool, now):
        if await reset_one(pool, org["id"], org["billing_anchor_day"], org["current_cycle_end"], now):
            reset += 1
    return reset
