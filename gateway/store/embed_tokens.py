"""Embed tokens for the website widget. Only the SHA-256 of a token and a display prefix are stored."""
from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

# lastUsedAt is written at most once per this many seconds per token, so a busy widget does not
# turn every exchange into a row write.
LAST_USED_RESOLUTION_SECONDS = 60

_LIST_COLUMNS = "id, label, token_prefix, allowed_domains, last_used_at, created_at"


async def find_active(conn: Any, token_hash: bytes) -> Any:
    """The unrevoked token with its organization (for the widget exchange), or None."""
    return await conn.fetchrow(
        """SELECT t.id, t.organization_id, t.allowed_domains, t.last_used_at, o.plan, o.status,
                  o.name AS org_name, o.phone_number
             FROM embed_tokens t JOIN organizations o ON o.id = t.organization_id
            WHERE t.token_hash = $1 AND t.revoked_at IS NULL""",
        token_hash,
    )


async def list_active(conn: Any, org_id: UUID) -> list[Any]:
    return await conn.fetch(
        f"""SELECT {_LIST_COLUMNS} FROM embed_tokens
             WHERE organization_id = $1 AND revoked_at IS NULL
             ORDER BY created_at DESC, id""",
        org_id,
    )


async def lock_org(conn: Any, org_id: UUID) -> None:
    """Serialise token creation per organization (inside a transaction) so the cap holds under
    concurrency. NO KEY UPDATE does not block rows elsewhere that merely reference the organization."""
    await conn.execute("SELECT 1 FROM organizations WHERE id = $1 FOR NO KEY UPDATE", org_id)


async def count_active(conn: Any, org_id: UUID) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM embed_tokens WHERE organization_id = $1 AND revoked_at IS NULL", org_id)


async def create(conn: Any, org_id: UUID, token_hash: bytes, prefix: str, label: str | None,
                 allowed_domains: list[str]) -> Any:
    return await conn.fetchrow(
        f"""INSERT INTO embed_tokens (id, organization_id, token_hash, token_prefix, label, allowed_domains)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_LIST_COLUMNS}""",
        uuid4(), org_id, token_hash, prefix, label, allowed_domains,
    )


async def revoke(conn: Any, org_id: UUID, token_id: UUID) -> bytes | None:
    """The revoked token's hash when this organization's active token was revoked now; None for
    unknown, another organization's, or already revoked."""
    return await conn.fetchval(
        """UPDATE embed_tokens SET revoked_at = now()
            WHERE id = $1 AND organization_id = $2 AND revoked_at IS NULL RETURNING token_hash""",
        token_id, org_id,
    )


async def touch(conn: Any, org_id: UUID, token_id: UUID) -> None:
    """Record a use, unless one was recorded within the resolution (the condition also settles
    races between replicas: only one of them writes)."""
    await conn.execute(
        """UPDATE embed_tokens SET last_used_at = now()
            WHERE id = $1 AND organization_id = $2
              AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $3))""",
        token_id, org_id, float(LAST_USED_RESOLUTION_SECONDS),
    )
