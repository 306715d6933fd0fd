"""Handlers by area. A handler is a small async function ``(request, ctx) -> response``.

``@handler`` registers it as ``<module>.<function>``, the name endpoints.yaml uses. The config
check compares this registry with the routes both ways (unknown handler, handler no route uses).
"""
from __future__ import annotations

import importlib
from typing import Any, Awaitable, Callable

Handler = Callable[..., Awaitable[Any]]
REGISTRY: dict[str, Handler] = {}

# Every module that defines handlers; importing them fills REGISTRY.
MODULES = ("health", "auth", "nextauth", "embed_tokens", "widget", "business", "admin", "cron", "webhooks", "sandbox")


def handler(fn: Handler) -> Handler:
    module = fn.__module__.rsplit(".", 1)[-1]
    REGISTRY[f"{module}.{fn.__name__}"] = fn
    return fn


def load_handlers() -> dict[str, Handler]:
    for name in MODULES:
        importlib.import_module(f"gateway.handlers.{name}")
    return dict(REGISTRY)
