"""Short-lived in-process caches of token lookups (sessions, embed tokens) that never outlive a
sign-out or a revocation.

A cached entry saves a database round trip on every authenticated request. It is only used while
the LISTEN connection is healthy: sign-out, password changes, revocations and organization changes
publish an event that every process (this one included) applies, and a reconnect of the listener
empties the cache since events may have been missed meanwhile.

A lookup that started before an invalidation must not store its (now stale) result after it:
``generation`` moves on every invalidation, and ``put`` refuses a result read under an older one.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Protocol
from uuid import UUID


class Cacheable(Protocol):
    organization_id: UUID | None
    user_id: UUID | None
    expires_ts: float  # wall-clock expiry of the token itself


class TokenCache:
    def __init__(self, ttl: float, is_trusted: Callable[[], bool], max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._is_trusted = is_trusted
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}
        self.generation = 0

    def get(self, token_hash: bytes) -> Any | None:
        if self._ttl <= 0 or not self._is_trusted():
            return None
        hit = self._entries.get(token_hash)
        if hit is None:
            return None
        stored_at, value = hit
        if time.monotonic() - stored_at > self._ttl or value.expires_ts <= time.time():
            self._entries.pop(token_hash, None)
            return None
        return value

    async def get_or_load(self, token_hash: bytes, load: Callable[[], Awaitable[Any | None]]) -> Any | None:
        """The cached value, else ``await load()`` (None: unknown token, not cached), stored unless
        an invalidation happened while it was being read."""
        value = self.get(token_hash)
        if value is None:
            generation = self.generation
            value = await load()
            if value is not None:
                self.put(token_hash, value, generation)
        return value

    def put(self, token_hash: bytes, value: Cacheable, read_at_generation: int) -> None:
        if self._ttl <= 0 or not self._is_trusted() or read_at_generation != self.generation:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but safe bound: a miss only costs a query
        self._entries[token_hash] = (time.monotonic(), value)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def apply(self, event: dict[str, Any]) -> None:
        """Apply an invalidation event from any process."""
        kind = event.get("kind")
        if kind in ("sessions_ended", "tokens_revoked"):
            self.generation += 1
            for h in event.get("hashes", []):
                self._entries.pop(bytes.fromhex(h), None)
        elif kind in ("organization_changed", "user_changed"):
            self.generation += 1
            field = "organization_id" if kind == "organization_changed" else "user_id"
            target = event.get("id")
            for key, (_, value) in list(self._entries.items()):
                if str(getattr(value, field)) == target:
                    self._entries.pop(key, None)
