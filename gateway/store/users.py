"""Users. Emails are stored normalised (see security.normalize_email)."""
from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4


async def create(conn: Any, organization_id: UUID, email: str, name: str, password_hash: str, role: str = "OWNER") -> UUID:
    user_id = uuid4()
    await conn.execute(
        "INSERT INTO users (id, organization_id, email, name, password_hash, role) VALUES ($1, $2, $3, $4, $5, $6)",
        user_id, organization_id, email, name, password_hash, role,
    )
    return user_id


async def by_email(conn: Any, email: str) -> Any:
    return await conn.fetchrow(
        """SELECT u.id, u.organization_id, u.email, u.name, u.role, u.password_hash, u.must_change_password, o.status
             FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.email = $1""",
        email,
    )


async def by_id(conn: Any, user_id: UUID) -> Any:
    return await conn.fetchrow(
        "SELECT id, organization_id, email, name, role, password_hash, must_change_password FROM users WHERE id = $1",
        user_id,
    )


async def set_password(conn: Any, user_id: UUID, password_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2, must_change_password = false, password_changed_at = now() WHERE id = $1",
        user_id, password_hash,
    )


async def replace_hash(conn: Any, user_id: UUID, old_hash: str, new_hash: str) -> None:
    """Upgrade a hash to today's KDF parameters (same password), unless the password changed meanwhile."""
    await conn.execute("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2", user_id, old_hash, new_hash)
