"""``gateway`` command line: serve, check, migrate.

``gateway serve`` is what ``make run`` runs: validate config, start the embedded PostgreSQL when
DATABASE_URL is unset, apply migrations, serve until Ctrl-C, then stop the database cleanly.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

import structlog

from gateway.config import ConfigError
from gateway.logs import configure_logging
from gateway.settings import Settings, load_settings

log = structlog.get_logger("gateway.cli")


def _check(args: argparse.Namespace) -> int:
    from gateway.app import read_config

    overrides = {}
    if args.endpoints:
        overrides["endpoints_file"] = Path(args.endpoints)
    if args.plans:
        overrides["plans_file"] = Path(args.plans)
    settings = load_settings(**overrides)
    try:
        config = read_config(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    gated = sum(1 for r in config.routes if r.feature)
    print(
        f"ok: {len(config.routes)} routes ({gated} feature-gated), {len(config.plans.tiers)} tiers, "
        f"{len(config.plans.features)} features in {settings.endpoints_file.name} and {settings.plans_file.name}"
    )
    return 0


def resolve_database(settings: Settings):  # noqa: ANN201 - (settings, embedded or None)
    """Use DATABASE_URL, or start the embedded cluster under the data dir."""
    if settings.database_url:
        return settings, None
    from gateway.embedded_pg import EmbeddedPostgres

    pg = EmbeddedPostgres(settings.data_dir / "postgres", log=lambda msg: log.info("embedded_postgres", detail=msg))
    dsn = pg.start()
    log.warning("embedded_postgres.started", data_dir=str(settings.data_dir / "postgres"))
    return dataclasses.replace(settings, database_url=dsn), pg


def _migrate(args: argparse.Namespace) -> int:
    from gateway.db import migrate

    configure_logging(load_settings().log_level)
    settings, pg = resolve_database(load_settings())
    try:
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    finally:
        if pg:
            pg.stop()
    return 0


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.app import create_app, read_config
    from gateway.db import migrate
    from providers.sandbox import apply_sandbox

    settings = load_settings()
    configure_logging(settings.log_level, flush_after=0.1)  # lines reach stdout within 0.1 s, in batches
    try:
        config = read_config(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings, sandboxed = apply_sandbox(settings)
    settings = dataclasses.replace(settings, sandbox=True,
                                   internal_base_url=f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}")
    settings, pg = resolve_database(settings)
    try:
        applied = asyncio.run(migrate(settings.database_url))
        log.info("migrations", applied=applied)
        app = create_app(settings, config, sandboxed=sandboxed)
        # Ctrl-C waits at most 10 s for in-flight requests (aiohttp's default is 60 s, and a client
        # that stalls mid-body would hold the whole shutdown that long).
        web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None, handle_signals=True,
                    shutdown_timeout=10)
    finally:
        if pg:
            pg.stop()
            log.info("embedded_postgres.stopped")
    return 0


def _outbox(args: argparse.Namespace) -> int:
    """Print the newest emails of the outbox (until the mail worker delivers them, that is where
    welcome, reset and magic-link emails wait). Uses DATABASE_URL, or the running embedded database."""
    import asyncpg

    settings = load_settings()
    dsn = settings.database_url
    dsn_file = settings.data_dir / "postgres" / "dsn"
    if not dsn:
        if not dsn_file.exists():
            print(f"no DATABASE_URL and no running embedded database ({dsn_file} is missing): start `make run` first",
                  file=sys.stderr)
            return 1
        dsn = dsn_file.read_text().strip()

    async def show() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT id, created_at, to_address, subject, body_text, sent_at FROM outbox ORDER BY id DESC LIMIT $1",
                args.limit)
        finally:
            await conn.close()
        for row in reversed(rows):
            state = f"sent {row['sent_at']:%Y-%m-%d %H:%M}" if row["sent_at"] else "not sent yet"
            print(f"#{row['id']}  {row['created_at']:%Y-%m-%d %H:%M:%S}  to {row['to_address']}  ({state})")
            print(f"Subject: {row['subject']}\n\n{row['body_text']}\n{'-' * 72}")

    asyncio.run(show())
    return 0


def _sandbox_call(args: argparse.Namespace) -> int:
    """Ask the running gateway (sandbox mode) to play a whole inbound call through the VAPI fake:
    status updates, then an end-of-call report, as signed webhooks to /api/webhooks/vapi."""
    import json
    import urllib.error
    import urllib.request

    settings = load_settings()
    if not settings.admin_api_key:
        print("ADMIN_API_KEY must be set (the same value as the running gateway's)", file=sys.stderr)
        return 2
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    body = {"organizationId": args.org, "seconds": args.seconds, "caller": args.caller}
    request = urllib.request.Request(
        f"http://{host}:{settings.port}/api/admin/sandbox/calls", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "x-admin-key": settings.admin_api_key})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the gateway on {host}:{settings.port} ({exc}); is `make run` running?", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("delivered") else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate endpoints.yaml and plans.yaml; print file:line problems")
    check.add_argument("--endpoints", help="path to an endpoints.yaml (default: the repo's)")
    check.add_argument("--plans", help="path to a plans.yaml (default: the repo's)")
    check.set_defaults(fn=_check)
    sub.add_parser("serve", help="run the gateway (embedded PostgreSQL when DATABASE_URL is unset)").set_defaults(fn=_serve)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(fn=_migrate)
    outbox = sub.add_parser("outbox", help="print the newest emails waiting in (or sent from) the outbox")
    outbox.add_argument("--limit", type=int, default=5)
    outbox.set_defaults(fn=_outbox)
    sandbox = sub.add_parser("sandbox", help="drive sandbox mode's fakes on the running gateway")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    call = sandbox_sub.add_parser("call", help="play a whole inbound call for an organization (VAPI fake)")
    call.add_argument("--org", required=True, help="the organization id")
    call.add_argument("--seconds", type=int, default=60)
    call.add_argument("--caller", default="+15555550123")
    call.set_defaults(fn=_sandbox_call)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
