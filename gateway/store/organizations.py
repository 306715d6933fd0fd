"""Organizations (tenants). Every function takes the organization id explicitly."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

from gateway.billing_cycle import first_cycle

_COLUMNS = """id, name, plan, status, minutes_used, minutes_limit, billing_anchor_day, current_cycle_start,
              current_cycle_end, phone_number, business_type, business_description, website_url,
              business_hours, timezone, business_address, created_at, updated_at"""
_USERS_COUNT = "(SELECT count(*) FROM users u WHERE u.organization_id = organizations.id) AS users_count"


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
    if not values:
        return await get(conn, org_id)
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=2))
    return await conn.fetchrow(
        f"UPDATE organizations SET {assignments}, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
        org_id, *values.values(),
    )


# ---- operator (admin API) views: across tenants by design, never reachable from a tenant route ----

def _like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere (its own % _ and \\ escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_page(conn: Any, *, limit: int, offset: int, plan: str | None = None, no_plan: bool = False,
                    name_contains: str | None = None) -> tuple[list[Any], int]:
    """One page in a stable order (oldest first, id breaks ties) and the total matching count."""
    where, args = [], []
    if no_plan:
        where.append("plan IS NULL")
    elif plan is not None:
        args.append(plan)
        where.append(f"plan = ${len(args)}")
    if name_contains:
        args.append(_like_pattern(name_contains))
        where.append(f"name ILIKE ${len(args)} ESCAPE '\\'")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    total = await conn.fetchval(f"SELECT count(*) FROM organizations {clause}", *args)
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS}, {_USERS_COUNT} FROM organizations {clause}
            ORDER BY created_at, id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",
        *args, limit, offset,
    )
    return rows, total


async def get_with_counts(conn: Any, org_id: UUID) -> Any:
    return await conn.fetchrow(f"SELECT {_COLUMNS}, {_USERS_COUNT} FROM organizations WHERE id = $1", org_id)


async def members(conn: Any, org_id: UUID) -> list[Any]:
    return await conn.fetch(
        "SELECT id, email, name, role, created_at FROM users WHERE organization_id = $1 ORDER BY created_at, id",
        org_id,
    )
