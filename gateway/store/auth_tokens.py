"""One-time tokens (password reset, magic link): random, stored hashed, single use, expiring."""
from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

TTL = {"password_reset": timedelta(hours=1), "magic_link": timedelta(minutes=15)}


async def create(conn: Any, kind: str, token_hash: bytes, user_id: UUID, organization_id: UUID) -> None:
    await conn.execute(
        """INSERT INTO auth_tokens (token_hash, kind, user_id, organization_id, expires_at)
           VALUES ($1, $2, $3, $4, now() + $5::interval)""",
        token_hash, kind, user_id, organization_id, TTL[kind],
    )


async def consume(conn: Any, kind: str, token_hash: bytes) -> Any:
    """Mark the token used and return its user, atomically: two concurrent redemptions get one row."""
    return await conn.fetchrow(
        """UPDATE auth_tokens SET used_at = now()
            WHERE token_hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > now()
        RETURNING user_id, organization_id""",
        token_hash, kind,
    )


async def peek(conn: Any, kind: str, token_hash: bytes) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM auth_tokens WHERE token_hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > now()",
        token_hash, kind,
    ))
