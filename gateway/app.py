"""The app factory (no I/O) and the process-wide services opened in ``cleanup_ctx``."""
from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from gateway import db as gdb
from gateway.cache import TokenCache
from gateway.config import Config, ConfigError, load_config
from gateway.config_diff import diff_configs
from gateway.handlers import load_handlers
from gateway.pipeline import SERVICES, handle
from gateway.settings import Settings
from policies import ratelimit
from policies.auth import METHODS

log = structlog.get_logger("gateway.app")


def read_config(settings: Settings) -> Config:
    """Load both YAML files against the code's handlers and auth methods (raises ConfigError)."""
    return load_config(settings.endpoints_file, settings.plans_file, load_handlers(), METHODS.keys())


@dataclass
class Services:
    settings: Settings
    config: Config
    pool: asyncpg.Pool = None  # type: ignore[assignment]
    listener: gdb.Listener | None = None
    session_cache: TokenCache = None  # type: ignore[assignment]
    embed_token_cache: TokenCache = None  # type: ignore[assignment]
    rate_leases: ratelimit.Leases = field(default_factory=ratelimit.Leases)
    sandboxed: dict[str, str] = field(default_factory=dict)  # service -> why (credentials unset)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    sandbox: Any = None  # providers.sandbox.Sandbox in sandbox mode

    def reload_config(self) -> list[str]:
        """Re-read both files and swap atomically; on any problem keep the old config (raises ConfigError)."""
        new = read_config(self.settings)
        changes = diff_configs(self.config, new)
        self.config = new
        log.info("config.reloaded", changes=changes)
        return changes

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("kind") == "config_reload":
            if event.get("pid") != os.getpid():
                try:
                    self.reload_config()
                except ConfigError as exc:
                    log.error("config.reload_failed", problems=[str(p) for p in exc.problems])
            return
        self.session_cache.apply(event)
        self.embed_token_cache.apply(event)


async def _purge_loop(services: Services) -> None:
    """Housekeeping that keeps the shared tables small; safe to run in every process."""
    while True:
        await asyncio.sleep(60)
        try:
            await ratelimit.purge_expired(services.pool)
            await services.pool.execute("DELETE FROM sessions WHERE expires_at <= now()")
        except Exception:  # the database may be away; try again next minute
            log.warning("housekeeping.failed")


def _on_sighup(services: Services) -> None:
    try:
        services.reload_config()
    except ConfigError as exc:
        log.error("config.reload_failed", problems=[str(p) for p in exc.problems])


async def _sandbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sandbox mode: fakes for the services without credentials, started before anything uses them."""
    services: Services = app[SERVICES]
    if not services.settings.sandbox:
        yield
        return
    from providers.sandbox import start_fakes  # only sandbox mode imports the fakes

    services.settings, services.sandbox, reasons = await start_fakes(services.settings)
    services.sandboxed.update(reasons)
    yield
    await services.sandbox.close()


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    services: Services = app[SERVICES]
    settings = services.settings
    assert settings.database_url, "DATABASE_URL must be resolved before the app starts"
    services.pool = await gdb.create_pool(settings.database_url)
    def listener_reconnected() -> None:  # events may have been missed: trust nothing cached
        services.session_cache.clear()
        services.embed_token_cache.clear()

    services.listener = gdb.Listener(settings.database_url, services.on_event, listener_reconnected)
    trusted = lambda: bool(services.listener and services.listener.healthy)  # noqa: E731
    services.session_cache = TokenCache(settings.session_cache_seconds, trusted)
    services.embed_token_cache = TokenCache(settings.session_cache_seconds, trusted)
    services.listener.start()
    # Logged here, not by the CLI: sandbox mode has replaced some settings by now.
    log.info("gateway.start", settings=settings.describe(), sandboxed=sorted(services.sandboxed))
    services.background.append(asyncio.create_task(_purge_loop(services), name="housekeeping"))
    if settings.smtp_url:
        from providers.mail import OutboxWorker

        worker = OutboxWorker(services.pool, settings.smtp_url, settings.mail_from)
        services.background.append(asyncio.create_task(worker.run(), name="outbox-mail"))
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, _on_sighup, services)
    except (NotImplementedError, RuntimeError, ValueError):
        pass  # not the main thread (tests) or no signals on this platform
    yield
    try:
        loop.remove_signal_handler(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    for task in services.background:
        task.cancel()
    await asyncio.gather(*services.background, return_exceptions=True)
    await services.listener.stop()
    await services.pool.close()


def create_app(settings: Settings, config: Config, sandboxed: dict[str, str] | None = None) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[SERVICES] = Services(settings=settings, config=config, sandboxed=dict(sandboxed or {}))
    app.cleanup_ctx.append(_sandbox_ctx)
    app.cleanup_ctx.append(_services_ctx)
    # One catch-all: routing is data (config.match), so a reload can change it without restart.
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
