"""Structured JSON log lines (structlog + orjson) on stdout.

Nothing secret is ever passed to a logger: handlers log ids and outcomes, the access line logs
the path without its query string. As a second guard, keys that look secret are masked.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

_SECRET_KEYS = ("password", "token", "secret", "authorization", "cookie", "api_key", "apikey", "key")


def _mask_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        lowered = key.lower()
        if any(s in lowered for s in _SECRET_KEYS) and key not in ("request_id",):
            event[key] = "[redacted]"
    return event


def processors() -> list[Any]:
    """The chain every log line goes through (tests wrap a logger around it to read the lines)."""
    return [
        structlog.contextvars.merge_contextvars,
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
