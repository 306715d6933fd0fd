"""Server-side sessions. The cookie holds a random token; the table holds its SHA-256."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

SESSION_TTL = timedelta(days=30)  # NextAuth's default maxAge


async def create(conn: Any, token_hash: bytes, user_id: UUID, organization_id: UUID) -> datetime:
    expires = datetime.now(timezone.utc) + SESSION_TTL
    await conn.execute(
        "INSERT INTO sessions (token_hash, user_id, organization_id, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash, user_id, organization_id, expires,
    )
    return expires


async def lookup(conn: Any, token_hash: bytes) -> Any:
    """The live session with its user and organization, or None."""
    return await conn.fetchrow(
        """
        SELECT s.expires_at, u.id AS user_id, u.email, u.name, u.role, u.must_change_password,
               o.id AS organization_id, o.plan, o.status
          FROM sessions s
          JOIN users u ON u.id = s.user_id
          JOIN organizations o ON o.id = s.organization_id
         WHERE s.token_hash = $1 AND s.expires_at > now()
        """,
        token_hash,
    )


async def delete(conn: Any, token_hash: bytes) -> None:
    await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)


async def delete_for_user(conn: Any, user_id: UUID, keep: bytes | None = None) -> list[bytes]:
    """End every session of a user (except ``keep``); returns the ended hashes for cache eviction."""
    rows = await conn.fetch(
        "DELETE FROM sessions WHERE user_id = $1 AND ($2::bytea IS NULL OR token_hash <> $2) RETURNING token_hash",
        user_id, keep,
    )
    return [r["token_hash"] for r in rows]


async def purge_expired(conn: Any) -> int:
    result = await conn.execute("DELETE FROM sessions WHERE expires_at <= now()")
    return int(result.split()[-1])
