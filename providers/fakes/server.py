"""Running a fake on a loopback port, and telling it to misbehave.

``FakeServer`` starts any aiohttp app on 127.0.0.1 at a free port (``await fake.start()``,
``fake.url``, ``await fake.stop()``). ``Faults`` is the switchboard every fake consults at the top
of each request: ``fake.faults.fail_next("5xx", times=2)`` makes the next two requests answer 503;
kinds are "5xx", "429", "timeout" (hold the request longer than any client waits) and "malformed"
(200 with a body that is not the expected JSON).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable

from aiohttp import web

FAULT_KINDS = ("5xx", "429", "timeout", "malformed")
FAULTS: web.AppKey["Faults"] = web.AppKey("faults", object)  # type: ignore[arg-type]


class Faults:
    def __init__(self) -> None:
        self._queue: deque[str] = deque()
        self.timeout_seconds = 30.0

    def fail_next(self, kind: str, times: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        self._queue.extend([kind] * times)

    def clear(self) -> None:
        self._queue.clear()

    def take(self) -> str | None:
        return self._queue.popleft() if self._queue else None


@web.middleware
async def fault_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Applies the next queued fault, if any, before the fake's real handler runs."""
    fault = request.app[FAULTS].take()
    if fault == "5xx":
        return web.json_response({"message": "fake: injected server error", "statusCode": 503}, status=503)
    if fault == "429":
        return web.json_response({"message": "fake: injected rate limit", "statusCode": 429}, status=429,
                                 headers={"Retry-After": "1"})
    if fault == "timeout":
        await asyncio.sleep(request.app[FAULTS].timeout_seconds)
    if fault == "malformed":
        return web.Response(status=200, body=b"<html>not json", content_type="text/html")
    return await handler(request)


def make_app(**kwargs: Any) -> web.Application:
    """An aiohttp app with the fault switchboard installed; fakes add their routes to it."""
    app = web.Application(middlewares=[fault_middleware], **kwargs)
    app[FAULTS] = Faults()
    return app


class FakeServer:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def faults(self) -> Faults:
        return self.app[FAULTS]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FakeServer":
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
