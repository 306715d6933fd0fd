"""Received webhooks, deduplicated by the provider's own event identity."""
from __future__ import annotations

from typing import Any
from uuid import UUID


async def record(conn: Any, provider: str, event_key: str, event_type: str, payload: Any,
                 organization_id: UUID | None = None) -> bool:
    """True when this is the first delivery of the event; False for a duplicate (nothing written)."""
    inserted = await conn.fetchval(
        """INSERT INTO webhook_events (provider, event_key, event_type, organization_id, payload)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (provider, event_key) DO NOTHING RETURNING id""",
        provider, event_key, event_type, organization_id, payload,
    )
    return inserted is not None
