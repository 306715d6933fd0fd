"""Structured JSON log lines (structlog + orjson) on stdout.

Nothing secret is ever passed to a logger: handlers log ids and outcomes, the access line logs
the path without its query string. As a second guard, keys that look secret are masked.
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import orjson
import structlog

_SECRET_KEYS = ("password", "token", "secret", "authorization", "cookie", "api_key", "apikey", "key")


@functools.lru_cache(maxsize=1024)
def _looks_secret(key: str) -> bool:
    # Cached: log lines use a handful of fixed keys, and this runs for every key of every line.
    lowered = key.lower()
    return key != "request_id" and any(s in lowered for s in _SECRET_KEYS)


def _mask_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event:
        if _looks_secret(key):
            event[key] = "[redacted]"
    return event


def processors() -> list[Any]:
    """The chain every log line goes through (tests wrap a logger around it to read the lines)."""
    # No contextvars merging: nothing binds context; every line passes its request_id explicitly.
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
    # Libraries that use the stdlib logger (aiohttp, asyncpg) go to stderr at warning and above.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
