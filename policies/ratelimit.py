"""Named rate limits, counted in Postgres so that every gateway process shares one count.

Fixed windows: a counter per (policy, key, window). All of a request's limits are counted in one
statement (one round trip). Keys are hashed before storage so the table holds no emails or tokens.
``RATE_LIMIT_MULTIPLIER`` scales every limit (load tests measure the limiter without tripping it).
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Any, Iterable

from gateway.config import RateLimit
from gateway.errors import ApiError

_COUNT_SQL = """
INSERT INTO rate_counters AS c (key, window_start, count, expires_at)
SELECT k, to_timestamp(w), 1, to_timestamp(w + p)
  FROM unnest($1::text[], $2::float8[], $3::int[]) AS t(k, w, p)
ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1
RETURNING key, count
"""


def counter_key(limit: RateLimit, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
    return f"{limit.name}:{digest}"


async def hit(db: Any, limits: Iterable[tuple[RateLimit, str]], multiplier: float = 1.0, now: float | None = None) -> None:
    """Count one request against each (limit, key value); raise 429 if any is exhausted."""
    now = time.time() if now is None else now
    keys, windows, periods, by_key = [], [], [], {}
    for limit, value in limits:
        start = math.floor(now / limit.per_seconds) * limit.per_seconds
        key = counter_key(limit, value)
        keys.append(key)
        windows.append(float(start))
        periods.append(limit.per_seconds)
        by_key[key] = (limit, start)
    if not keys:
        return
    rows = await db.fetch(_COUNT_SQL, keys, windows, periods)
    retry_after = 0
    for row in rows:
        limit, start = by_key[row["key"]]
        allowed = max(1, int(limit.limit * multiplier))
        if row["count"] > allowed:
            retry_after = max(retry_after, math.ceil(start + limit.per_seconds - now))
    if retry_after:
        raise ApiError(429, "Too many requests, slow down", "rate_limited",
                       headers={"Retry-After": str(max(1, retry_after))}, retryAfter=max(1, retry_after))


async def purge_expired(db: Any) -> None:
    await db.execute("DELETE FROM rate_counters WHERE expires_at < now()")
