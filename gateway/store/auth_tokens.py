"""One-time tokens (password reset, magic link): random, stored hashed, single use, expiring."""
from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

TTL = {"password_reset": timedelta(hours=1), "magic_link": timedelta(minutes=15)}

# A token is live while unused and younger than its kind's TTL. The age is checked against
# created_at as well as expires_at, so a row written with a longer expiry (by hand, or by a future
# caller) still cannot outlive the documented lifetime.
_LIVE = "used_at IS NULL AND expires_at > now() AND created_at > now() - $3::interval"


async def create(conn: Any, kind: str, token_hash: bytes, user_id: UUID, organization_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO auth_tokens (token_hash, kind, user_id, organization_id, expires_at)
           VALUES ($1, $2, $3, $4, now() + $5::interval)""",
        token_hash, kind, user_id, organization_id, TTL[kind],
    )


async def consume(conn: Any, kind: str, token_hash: bytes) -> Any:
    """Mark the token used and return its user, atomically: two concurrent redemptions get one row."""
    return await conn.fetchrow(
        f"""UPDATE auth_tokens SET used_at = now()
             WHERE token_hash = $1 AND kind = $2 AND {_LIVE}
         RETURNING user_id, organization_id""",
        token_hash, kind, TTL[kind],
    )


async def peek(conn: Any, kind: str, token_hash: bytes) -> bool:
    return bool(await conn.fetchval(
        f"SELECT 1 FROM auth_tokens WHERE token_hash = $1 AND kind = $2 AND {_LIVE}",
        token_hash, kind, TTL[kind],
    ))


async def void_for_user(conn: Any, kind: str, user_id: UUID) -> None:
    """Retire a user's other unused tokens of a kind (a reset makes older reset links useless)."""
    await conn.execute(
        "UPDATE auth_tokens SET used_at = now() WHERE user_id = $1 AND kind = $2 AND used_at IS NULL",
        user_id, kind,
    )
