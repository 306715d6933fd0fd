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
from aiohttp.http_exceptions import HttpProcessingError

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


class _StdoutLogger:
    """Writes each JSON line to whatever ``sys.stdout`` is at that moment, so a logger created
    while stdout was temporarily replaced (a test capturing output) never writes to a closed file."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: bytes) -> None:
        out = sys.stdout.buffer
        out.write(message + b"\n")
        out.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StdoutLogger,
        cache_logger_on_first_use=True,
    )
    # Libraries that use the stdlib logger (aiohttp, asyncpg) go to stderr at warning and above.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _MalformedRequestFilter) for f in server_log.filters):
        server_log.addFilter(_MalformedRequestFilter())


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot even parse (a 9 KB request line, bytes that are not HTTP)
    with a traceback whose message quotes the raw request line, query string and its one-time
    tokens included. That is a client's mistake, not ours: log one JSON line without the text."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            structlog.get_logger("gateway.access").warning(
                "malformed_http_request", error=type(exc).__name__, status=getattr(exc, "code", 400))
            return False
        return True
