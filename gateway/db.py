"""PostgreSQL access: the asyncpg pool, migrations, and the cross-process invalidation channel.

The gateway is stateless; everything shared lives here. Caches in the process (sessions,
organizations) are only trusted while the LISTEN connection is up, so that a sign-out or a plan
change made by another process is seen at once; when that connection is down the caches are
bypassed and every request reads Postgres.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

import asyncpg
import orjson
import structlog

log = structlog.get_logger("gateway.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CHANNEL = "gateway_events"
_MIGRATION_LOCK = 7_240_001  # advisory lock id: one migrator at a time across processes

# Errors that mean "the database is not reachable right now" -> 503, never 500.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,  # the server is full (e.g. during a failover): try again shortly
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog")


async def _keep_session_state(conn: asyncpg.Connection) -> None:
    """Pool connections carry no session state to undo: no LISTEN (the listener has its own
    connection), no SET, no session-level advisory locks (jobs use transaction-scoped ones). So
    skip asyncpg's default reset, which costs a round trip (UNLISTEN *; RESET ALL; ...) on every
    release. asyncpg still rolls back a transaction left open before calling this."""


async def create_pool(dsn: str, *, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session_state,
        command_timeout=15,
        timeout=5,  # connect timeout: a dead database answers 503 quickly
        max_inactive_connection_lifetime=300,
    )


async def migrate(dsn: str) -> list[str]:
    """Apply pending numbered migrations, each in its own transaction, under an advisory lock."""
    conn = await asyncpg.connect(dsn, timeout=10)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            version = int(path.name[:4])
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, path.stem)
            applied_now.append(path.stem)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        finally:
            await conn.close()
    return applied_now


async def notify(conn_or_pool: Any, event: dict[str, Any]) -> None:
    """Tell every gateway process (this one included) that something cached changed."""
    await conn_or_pool.execute("SELECT pg_notify($1, $2)", CHANNEL, json.dumps(event))


class Listener:
    """One LISTEN connection with reconnects; ``healthy`` is False whenever events could be missed."""

    def __init__(self, dsn: str, on_event: Callable[[dict[str, Any]], None], on_gap: Callable[[], None]) -> None:
        self._dsn = dsn
        self._on_event = on_event
        self._on_gap = on_gap  # called when (re)connected: anything cached before may be stale
        self._task: asyncio.Task[None] | None = None
        self.healthy = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-listener")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def _deliver(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_event(json.loads(payload))
        except Exception:  # a bad payload must not kill the listener
            log.warning("listener.bad_event")

    async def _run(self) -> None:
        delay = 0.5
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c: lost.set())
                await conn.add_listener(CHANNEL, self._deliver)
                self._on_gap()
                self.healthy = True
                delay = 0.5
                while not lost.is_set():
                    # A cheap liveness probe: a half-open TCP connection would otherwise look healthy.
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=5)
                    except asyncio.TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=3)
            except asyncio.CancelledError:
                self.healthy = False
                if conn is not None:
                    conn.terminate()
                raise
            except Exception:
                pass
            self.healthy = False
            if conn is not None:
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
