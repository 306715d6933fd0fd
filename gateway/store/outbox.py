"""The mail outbox: written in the same transaction as the change that causes the mail."""
from __future__ import annotations

from typing import Any
from uuid import UUID


async def enqueue(conn: Any, organization_id: UUID | None, kind: str, to: str, subject: str, body: str) -> int:
    return await conn.fetchval(
        "INSERT INTO outbox (organization_id, kind, to_address, subject, body_text) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        organization_id, kind, to, subject, body,
    )
