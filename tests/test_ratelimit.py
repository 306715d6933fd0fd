"""Rate limits are counted in Postgres, so every gateway process shares one count."""
from __future__ import annotations

from typing import Any

import pytest

from gateway.config import RateLimit
from gateway.errors import ApiError
from policies import ratelimit
from tests.conftest import assert_error

WINDOW = 60.0 * 1_000_000  # a "now" on a window boundary


async def _register_garbage(client: Any) -> Any:
    # Invalid on purpose: the per-ip limit counts before validation, so guessing costs quota too.
    return await client.post("/api/auth/register", json={})


async def test_two_app_instances_share_one_count(make_client: Any, db: Any, config: Any) -> None:
    limit = config.rate_limits["register_per_ip"].limit
    a, b = await make_client(), await make_client()
    for i in range(limit):
        resp = await _register_garbage(a if i % 2 == 0 else b)
        assert resp.status == 400, (i, await resp.text())
    resp = await _register_garbage(b if limit % 2 else a)
    assert resp.status == 429
    body = await resp.json()
    assert_error(body, "rate_limited")
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= config.rate_limits["register_per_ip"].per_seconds
    assert body["retryAfter"] == retry
    assert resp.headers["X-Request-Id"]
    # The other instance sees the same exhausted count.
    assert (await _register_garbage(a)).status == 429
    # Keys are stored hashed: no address in the table.
    keys = [r["key"] for r in await db.fetch("SELECT key FROM rate_counters")]
    assert keys and all(k.startswith("register_per_ip:") and "127.0.0.1" not in k for k in keys)


async def test_the_multiplier_scales_limits(make_client: Any, config: Any) -> None:
    limit = config.rate_limits["register_per_ip"].limit
    client = await make_client(rate_limit_multiplier=0.2)
    allowed = max(1, int(limit * 0.2))
    statuses = [(await _register_garbage(client)).status for _ in range(allowed + 1)]
    assert statuses == [400] * allowed + [429]
    big = await make_client(rate_limit_multiplier=3)  # same database: the count so far is allowed + 1
    statuses = [(await _register_garbage(big)).status for _ in range(limit * 3 - allowed - 1)]
    assert set(statuses) == {400}
    assert (await _register_garbage(big)).status == 429


async def test_per_user_limits_key_on_the_user(make_client: Any, signup: Any, config: Any) -> None:
    alice, bob = await signup(), await signup()
    limit = config.rate_limits["user_default"].limit
    client = await make_client(rate_limit_multiplier=3 / limit)  # user_default becomes 3 per window
    assert config.route("business.info.get").rate_limits == (config.rate_limits["user_default"],)
    for _ in range(3):
        resp = await client.get("/api/business-info", headers=alice.auth)
        assert resp.status != 429
    resp = await client.get("/api/business-info", headers=alice.auth)
    assert resp.status == 429
    assert_error(await resp.json(), "rate_limited")
    # Same address, another user: a count of its own.
    resp = await client.get("/api/business-info", headers=bob.auth)
    assert resp.status != 429
    # Anonymous requests are refused by auth before the per-user count (nobody to count).
    resp = await client.get("/api/business-info")
    assert resp.status == 401


async def test_body_field_limits_are_case_insensitive(make_client: Any, config: Any) -> None:
    """login_per_account counts by body.email, whatever its case or spacing."""
    limit = config.rate_limits["login_per_account"].limit
    client = await make_client(rate_limit_multiplier=2 / limit)  # 2 per account
    emails = ["Victim@Example.com", " victim@example.com ", "VICTIM@EXAMPLE.COM"]
    statuses = []
    for email in emails:
        resp = await client.post("/api/auth/callback/credentials", json={"email": email, "password": "wrong"})
        statuses.append(resp.status)
    assert statuses[:2] == [401, 401] and statuses[2] == 429


async def test_windows_expire(db: Any) -> None:
    limit = RateLimit(name="unit", key="ip", limit=2, per_seconds=60)
    now = WINDOW
    await ratelimit.hit(db, [(limit, "1.2.3.4")], now=now)
    await ratelimit.hit(db, [(limit, "1.2.3.4")], now=now + 10)
    with pytest.raises(ApiError) as exc:
        await ratelimit.hit(db, [(limit, "1.2.3.4")], now=now + 45.5)
    assert exc.value.status == 429 and exc.value.code == "rate_limited"
    assert exc.value.headers["Retry-After"] == "15"  # until the window ends, rounded up
    assert exc.value.details["retryAfter"] == 15
    await ratelimit.hit(db, [(limit, "5.6.7.8")], now=now + 50)  # another key: its own count
    await ratelimit.hit(db, [(limit, "1.2.3.4")], now=now + 60)  # the next window
    await ratelimit.hit(db, [(limit, "1.2.3.4")], now=now + 119)
    with pytest.raises(ApiError):
        await ratelimit.hit(db, [(limit, "1.2.3.4")], now=now + 119.9)


async def test_several_limits_in_one_call_and_the_longest_wait_wins(db: Any) -> None:
    short = RateLimit(name="short", key="ip", limit=1, per_seconds=10)
    long = RateLimit(name="long", key="ip", limit=1, per_seconds=3600)
    await ratelimit.hit(db, [(short, "k"), (long, "k")], now=WINDOW * 6)
    with pytest.raises(ApiError) as exc:
        await ratelimit.hit(db, [(short, "k"), (long, "k")], now=WINDOW * 6 + 1)
    assert exc.value.headers["Retry-After"] == "3599"
    with pytest.raises(ApiError) as exc:  # only the long one is exhausted in the next short window
        await ratelimit.hit(db, [(short, "k"), (long, "k")], now=WINDOW * 6 + 10)
    assert exc.value.headers["Retry-After"] == "3590"
    await ratelimit.hit(db, [], now=WINDOW)  # nothing to count: no query, no error


async def test_multiplier_never_drops_a_limit_to_zero(db: Any) -> None:
    limit = RateLimit(name="tiny", key="ip", limit=5, per_seconds=60)
    await ratelimit.hit(db, [(limit, "k")], multiplier=0.0001, now=WINDOW)
    with pytest.raises(ApiError):
        await ratelimit.hit(db, [(limit, "k")], multiplier=0.0001, now=WINDOW)


async def test_purge_expired(db: Any) -> None:
    limit = RateLimit(name="old", key="ip", limit=5, per_seconds=60)
    await ratelimit.hit(db, [(limit, "k")], now=WINDOW)  # a window that ended long ago
    await ratelimit.hit(db, [(limit, "k")])  # the current one
    await ratelimit.purge_expired(db)
    assert await db.fetchval("SELECT count(*) FROM rate_counters") == 1


async def test_forwarded_for_is_ignored_unless_trusted(make_client: Any, config: Any) -> None:
    """A client cannot escape its per-ip limit by inventing X-Forwarded-For addresses."""
    limit = config.rate_limits["register_per_ip"].limit
    client = await make_client(rate_limit_multiplier=2 / limit)  # 2 per address
    statuses = [(await client.post("/api/auth/register", json={}, headers={"X-Forwarded-For": f"10.0.0.{i}"})).status
                for i in range(3)]
    assert statuses == [400, 400, 429]


async def test_trusted_forwarded_for_counts_the_address_our_proxy_saw(make_client: Any, config: Any) -> None:
    limit = config.rate_limits["register_per_ip"].limit
    client = await make_client(rate_limit_multiplier=1 / limit, trust_forwarded_for=True)  # 1 per address

    async def status(xff: str) -> int:
        return (await client.post("/api/auth/register", json={}, headers={"X-Forwarded-For": xff})).status

    assert await status("203.0.113.7") == 400
    assert await status("6.6.6.6, 203.0.113.7") == 429  # the client-supplied left part changes nothing
    assert await status("203.0.113.8") == 400
    assert await status("203.0.113.9,") == 400  # a trailing comma: the peer address, not an empty key
    assert await status(" ,") == 429  # the peer address again, already counted


async def test_leases_reserve_slices_and_never_admit_more_than_the_limit(db: Any) -> None:
    """Two processes (two Leases) on one counter: each reserves 1/20th of the limit at a time,
    spends it without a round trip, and together they admit exactly the limit."""
    limit = RateLimit(name="leased", key="user", limit=100, per_seconds=60)
    one, two = ratelimit.Leases(), ratelimit.Leases()
    admitted = refused = 0
    for i in range(130):
        try:
            await ratelimit.hit(db, [(limit, "u")], now=WINDOW + i * 0.1, leases=one if i % 3 else two)
            admitted += 1
        except ApiError as err:
            assert err.status == 429
            refused += 1
        if i == 0:  # the first request reserved a slice of 5 in the shared counter
            assert await db.fetchval("SELECT count FROM rate_counters") == 5
    assert admitted == 100 and refused == 30


async def test_leases_count_small_limits_request_by_request(db: Any) -> None:
    limit = RateLimit(name="small", key="ip", limit=10, per_seconds=60)  # under 40: slices of 1
    leases = ratelimit.Leases()
    for i in range(10):
        await ratelimit.hit(db, [(limit, "k")], now=WINDOW, leases=leases)
        assert await db.fetchval("SELECT count FROM rate_counters") == i + 1
    with pytest.raises(ApiError):
        await ratelimit.hit(db, [(limit, "k")], now=WINDOW, leases=leases)


async def test_leases_end_with_their_window(db: Any) -> None:
    limit = RateLimit(name="windowed", key="ip", limit=40, per_seconds=60)  # slices of 2
    leases = ratelimit.Leases()
    await ratelimit.hit(db, [(limit, "k")], now=WINDOW, leases=leases)  # reserves 2, spends 1
    await ratelimit.hit(db, [(limit, "k")], now=WINDOW + 60, leases=leases)  # new window: new slice
    rows = await db.fetch("SELECT count FROM rate_counters ORDER BY window_start")
    assert [r["count"] for r in rows] == [2, 2]
