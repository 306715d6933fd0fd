"""Structured JSON log lines (structlog + orjson) on stdout.

Nothing secret is ever passed to a logger: handlers log ids and outcomes, the access line logs
the path without its query string. As a second guard, keys that look secret are masked.
"""
from __future__ import annotations

import asyncio
import atexit
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


# Under load, one write(2) per log line costs more than the line itself: lines are gathered for at
# most ``_flush_after`` seconds (or 256 lines) and written together. 0 writes every line at once.
_pending: list[bytes] = []
_flush_after = 0.0
_flush_scheduled = False


def flush() -> None:
    global _flush_scheduled
    _flush_scheduled = False
    if _pending:
        lines = b"\n".join(_pending) + b"\n"
        _pending.clear()
        out = sys.stdout.buffer
        out.write(lines)
        out.flush()


atexit.register(flush)


class _StdoutLogger:
    """Writes each JSON line to whatever ``sys.stdout`` is at that moment, so a logger created
    while stdout was temporarily replaced (a test capturing output) never writes to a closed file."""

    def __init__(self, *_args: Any) -> None:
        pass

    def msg(self, message: bytes) -> None:
        _pending.append(message)
        if _flush_after <= 0 or len(_pending) >= 256:
            flush()
            return
        global _flush_scheduled
        if not _flush_scheduled:
            try:
                asyncio.get_running_loop().call_later(_flush_after, flush)
                _flush_scheduled = True
            except RuntimeError:  # no event loop (CLI, start-up): write now
                flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = failure = msg


def configure_logging(level: str = "info", flush_after: float = 0.0) -> None:
    global _flush_after
    flush()
    _flush_after = flush_after
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
