"""Named rate limits, counted in Postgres so that every gateway process shares one count.

Fixed windows: a counter per (policy, key, window). All of a request's limits are counted in one
statement (one round trip). Keys are hashed before storage so the table holds no emails or tokens.
``RATE_LIMIT_MULTIPLIER`` scales every limit (load tests measure the limiter without tripping it).

Leases: a round trip per request would make the limiter the most expensive stage of a cached,
authenticated read. So a process reserves a slice of a window's quota at a time (1/20th of the
limit, at least 1) by adding the slice to the shared counter, and spends it locally. Reservations
are real increments, so all processes together never admit more than the limit; a process may
refuse a little early while others hold unspent slices. Small limits (under 40 per window, e.g.
logins) get slices of 1, so they are counted exactly, request by request, in Postgres.
"""
from __future__ import annotations

import functools
import hashlib
import math
import time
from typing import Any, Iterable

from gateway.config import RateLimit
from gateway.errors import ApiError

_COUNT_SQL = """
INSERT INTO rate_counters AS c (key, window_start, count, expires_at)
SELECT k, to_timestamp(w), n, to_timestamp(w + p)
  FROM unnest($1::text[], $2::float8[], $3::int[], $4::int[]) AS t(k, w, p, n)
ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + EXCLUDED.count
RETURNING key, count
"""
SLICES_PER_WINDOW = 20


class Leases:
    """Quota this process has reserved in Postgres and not spent yet: (key, window start) -> left."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._left: dict[tuple[str, float], tuple[int, float]] = {}
        self._max = max_entries

    def take(self, key: str, start: float) -> bool:
        left, end = self._left.get((key, start), (0, 0.0))
        if left <= 0:
            return False
        self._left[(key, start)] = (left - 1, end)
        return True

    def add(self, key: str, start: float, end: float, count: int, now: float) -> None:
        if count <= 0:
            return
        if len(self._left) >= self._max:
            self._left = {k: v for k, v in self._left.items() if v[1] > now}
            if len(self._left) >= self._max:
                return  # still full of live entries: just do not keep this slice
        left, _ = self._left.get((key, start), (0, end))
        self._left[(key, start)] = (left + count, end)


@functools.lru_cache(maxsize=8192)  # a hash per limit per request otherwise
def counter_key(limit: RateLimit, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
    return f"{limit.name}:{digest}"


async def hit(db: Any, limits: Iterable[tuple[RateLimit, str]], multiplier: float = 1.0,
              now: float | None = None, leases: Leases | None = None) -> None:
    """Count one request against each (limit, key value); raise 429 if any is exhausted.
    Without ``leases`` every request is counted in Postgres (slices of 1)."""
    now = time.time() if now is None else now
    keys, windows, periods, slices, pending = [], [], [], [], {}
    for limit, value in limits:
        start = float(math.floor(now / limit.per_seconds) * limit.per_seconds)
        key = counter_key(limit, value)
        if leases is not None and leases.take(key, start):
            continue
        allowed = max(1, int(limit.limit * multiplier))
        piece = max(1, allowed // SLICES_PER_WINDOW) if leases is not None else 1
        keys.append(key)
        windows.append(start)
        periods.append(limit.per_seconds)
        slices.append(piece)
        pending[key] = (limit, start, allowed, piece)
    if not keys:
        return
    rows = await db.fetch(_COUNT_SQL, keys, windows, periods, slices)
    retry_after = 0
    for row in rows:
        limit, start, allowed, piece = pending[row["key"]]
        before = row["count"] - piece
        granted = min(piece, max(0, allowed - before))
        if granted == 0:
            retry_after = max(retry_after, math.ceil(start + limit.per_seconds - now))
        elif leases is not None:
            leases.add(row["key"], start, start + limit.per_seconds, granted - 1, now)  # one is spent now
    if retry_after:
        raise ApiError(429, "Too many requests, slow down", "rate_limited",
                       headers={"Retry-After": str(max(1, retry_after))}, retryAfter=max(1, retry_after))


async def purge_expired(db: Any) -> None:
    await db.execute("DELETE FROM rate_counters WHERE expires_at < now()")
