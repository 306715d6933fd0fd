"""The benchmark's ceiling: a bare aiohttp JSON handler, served exactly as `gateway serve` serves.

Same framework, same `web.run_app` settings (no access log), one process, loopback only. Whatever
this answers per second on this machine is the most the gateway's pipeline could reach.

    python scripts/bench_bare.py PORT
"""
from __future__ import annotations

import sys

from aiohttp import web


async def ok(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_get("/", ok)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


if __name__ == "__main__":
    main()
