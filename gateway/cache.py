"""A short-lived in-process cache of sessions that never outlives a sign-out.

A cached entry saves the session lookup round trip on every authenticated request. It is only
used while the LISTEN connection is healthy: sign-out, password changes and plan changes publish
an event that every process (this one included) applies before answering its next request, and
a reconnect of the listener empties the cache since events may have been missed meanwhile.
"""
from __future__ import annotations

import time
from typing import Any, Callable


class SessionCache:
    def __init__(self, ttl: float, is_trusted: Callable[[], bool], max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._is_trusted = is_trusted
        self._max = max_entries
        self._entries: dict[bytes, tuple[float, Any]] = {}

    def get(self, token_hash: bytes) -> Any | None:
        if self._ttl <= 0 or not self._is_trusted():
            return None
        hit = self._entries.get(token_hash)
        if hit is None:
            return None
        stored_at, value = hit
        if time.monotonic() - stored_at > self._ttl or value.session_expires_ts <= time.time():
            self._entries.pop(token_hash, None)
            return None
        return value

    def put(self, token_hash: bytes, value: Any) -> None:
        if self._ttl <= 0 or not self._is_trusted():
            return
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but safe bound: a miss only costs a query
        self._entries[token_hash] = (time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()

    def apply(self, event: dict[str, Any]) -> None:
        """Apply an invalidation event from any process."""
        kind = event.get("kind")
        if kind == "sessions_ended":
            for h in event.get("hashes", []):
                self._entries.pop(bytes.fromhex(h), None)
        elif kind in ("organization_changed", "user_changed"):
            field = "organization_id" if kind == "organization_changed" else "user_id"
            target = event.get("id")
            for key, (_, value) in list(self._entries.items()):
                if str(getattr(value.principal, field)) == target:
                    self._entries.pop(key, None)
