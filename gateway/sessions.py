"""Issuing and ending sessions: the cookie, the stored hash, and cross-process cache eviction."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from gateway import db as gdb
from gateway import security
from gateway.cache import TokenCache
from gateway.settings import Settings
from gateway.store import sessions as session_store


async def start(conn: Any, user_id: UUID, organization_id: UUID) -> tuple[str, datetime]:
    """A fresh random token at every login (no session fixation); only its hash is stored."""
    token = security.new_token()
    expires = await session_store.create(conn, security.token_hash(token), user_id, organization_id)
    return token, expires


def set_cookie(resp: web.StreamResponse, settings: Settings, token: str, expires: datetime) -> None:
    resp.set_cookie(
        settings.session_cookie_name,
        token,
        expires=expires.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.https,
    )


def clear_cookie(resp: web.StreamResponse, settings: Settings) -> None:
    resp.del_cookie(settings.session_cookie_name, path="/", secure=settings.https, httponly=True, samesite="Lax")


async def announce_ended(conn: Any, cache: TokenCache, hashes: list[bytes]) -> None:
    """Evict ended sessions here at once, and in every other process through NOTIFY (sent at commit)."""
    if hashes:
        event = {"kind": "sessions_ended", "hashes": [h.hex() for h in hashes]}
        cache.apply(event)
        await gdb.notify(conn, event)


def forget(cache: TokenCache, hashes: list[bytes]) -> None:
    """Evict again once the deleting transaction has committed: a request of this process that read
    the row before the commit may have cached it after the first eviction."""
    if hashes:
        cache.apply({"kind": "sessions_ended", "hashes": [h.hex() for h in hashes]})


async def end(conn: Any, cache: TokenCache, token_hash: bytes) -> None:
    await session_store.delete(conn, token_hash)
    await announce_ended(conn, cache, [token_hash])


async def end_all_for_user(conn: Any, cache: TokenCache, user_id: UUID, keep: bytes | None = None) -> list[bytes]:
    """End every session of a user but ``keep``; inside a transaction, call ``forget`` after it commits."""
    hashes = await session_store.delete_for_user(conn, user_id, keep)
    await announce_ended(conn, cache, hashes)
    return hashes
