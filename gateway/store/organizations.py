"""Organizations (tenants). Every function takes the organization id explicitly."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

from gateway.billing_cycle import first_cycle

_COLUMNS = """id, name, plan, status, minutes_used, minutes_limit, billing_anchor_day, current_cycle_start,
              current_cycle_end, phone_number, business_type, business_description, website_url,
              business_hours, timezone, business_address, created_at, updated_at"""


async def create(conn: Any, name: str, now: datetime | None = None) -> UUID:
    anchor, start, end = first_cycle(now or datetime.now(timezone.utc))
    org_id = uuid4()
    await conn.execute(
        """INSERT INTO organizations (id, name, billing_anchor_day, current_cycle_start, current_cycle_end)
           VALUES ($1, $2, $3, $4, $5)""",
        org_id, name, anchor, start, end,
    )
    return org_id


async def get(conn: Any, org_id: UUID) -> Any:
    return await conn.fetchrow(f"SELECT {_COLUMNS} FROM organizations WHERE id = $1", org_id)


async def update_fields(conn: Any, org_id: UUID, values: dict[str, Any]) -> Any:
    """Set the given columns (names come from code, never from input) and return the row."""
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=2))
    return await conn.fetchrow(
        f"UPDATE organizations SET {assignments}, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        org_id, *values.values(),
    )
