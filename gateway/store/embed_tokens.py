"""Embed tokens for the website widget. Only the SHA-256 of a token and a display prefix are stored."""
from __future__ import annotations

from typing import Any


async def find_active(conn: Any, token_hash: bytes) -> Any:
    """The unrevoked token with its organization (for the widget exchange), or None."""
    return await conn.fetchrow(
        """SELECT t.id, t.organization_id, t.allowed_domains, o.plan, o.status, o.name AS org_name, o.phone_number
             FROM embed_tokens t JOIN organizations o ON o.id = t.organization_id
            WHERE t.token_hash = $1 AND t.revoked_at IS NULL""",
        token_hash,
    )
