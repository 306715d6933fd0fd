"""Delivering the outbox over SMTP: a background worker, at least once, with backoff.

The core issue writes each email into ``outbox`` in the same transaction as the change that causes
it (gateway/store/outbox.py). ``OutboxWorker`` sends those rows:

1. CLAIM: one short statement picks due unsent rows with ``FOR UPDATE SKIP LOCKED`` and pushes
   their ``next_attempt_at`` forward by a lease (``lease_seconds``). Another worker, in this process
   or another, skips rows that are locked and no longer sees leased rows as due, so two workers
   never send one message in the same pass; no transaction stays open while SMTP talks.
2. SEND each claimed row over one SMTP connection (stdlib ``smtplib`` in a worker thread).
3. MARK: success sets ``sent_at``; failure increments ``attempts``, stores a short ``last_error``
   (never our credentials) and sets ``next_attempt_at`` to now + 5 s, 10 s, 20 s ... capped at 1 h.

At least once: a row stops being retried only when ``sent_at`` is set, so a message is never lost
while the SMTP server is down, and goes out when it comes back. If the process dies between the
send and the mark, the lease expires and the message is sent again (receivers see the same
Message-ID, derived from the row, so it can be recognised as a duplicate). A row that can never be
turned into an email (e.g. a line break inside the address) is parked: ``next_attempt_at`` becomes
'infinity' and ``last_error`` starts with "permanent:"; it stays visible in the outbox.
``attempts`` counts every try, the successful one included.

Environment the wiring should read:
- ``SMTP_URL``: ``smtp://[user:pass@]host[:port]`` (default port 587; STARTTLS when the server
  offers it) or ``smtps://[user:pass@]host[:port]`` (TLS from the first byte; default port 465).
  User and password are percent-decoded. Credentials are only sent over TLS, or to a loopback host.
- ``MAIL_FROM``: the From header, e.g. ``AI Receptionist <no-reply@example.com>``.
There is no default base URL: with no SMTP_URL, sandbox mode points the worker at providers/fakes/smtp.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

import structlog

from providers.errors import ProviderError

PROVIDER = "mail"
log = structlog.get_logger("providers.mail")

CLAIM_SQL = """
WITH due AS (
    SELECT id FROM outbox
    WHERE sent_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox o SET next_attempt_at = now() + $2 * interval '1 second'
FROM due WHERE o.id = due.id
RETURNING o.id, o.to_address, o.subject, o.body_text, o.created_at
"""
MARK_SENT_SQL = "UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = $1 AND sent_at IS NULL"
# The delay doubles with each failed try: base * 2^(tries before this one), capped.
MARK_FAILED_SQL = """
UPDATE outbox SET attempts = attempts + 1, last_error = $2,
    next_attempt_at = now() + least($4::float8, $3::float8 * power(2, least(attempts, 30))) * interval '1 second'
WHERE id = $1 AND sent_at IS NULL
"""
PARK_SQL = """
UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = 'infinity'
WHERE id = $1 AND sent_at IS NULL
"""


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool  # smtps://
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_smtp_url(url: str) -> SmtpTarget:
    """SMTP_URL to a target; a ProviderError (without the URL, which may hold a password) if invalid."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ProviderError(PROVIDER, "SMTP_URL is not a valid URL") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ProviderError(PROVIDER, "SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ProviderError(PROVIDER, "SMTP_URL has no host")
    implicit_tls = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname, port=port or (465 if implicit_tls else 587), implicit_tls=implicit_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True)
class OutboxMail:
    id: int
    to_address: str
    subject: str
    body_text: str
    created_at: datetime


def build_message(mail: OutboxMail, mail_from: str) -> EmailMessage:
    """The email for one outbox row. ValueError if a header cannot be written (e.g. a line break)."""
    if "\r" in mail.to_address or "\n" in mail.to_address or "@" not in parseaddr(mail.to_address)[1]:
        raise ValueError("the recipient is not a single email address")
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = mail.to_address
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(mail.created_at)
    # Stable across retries: a duplicate after a crash carries the same id.
    msg["Message-ID"] = f"<outbox.{mail.id}.{int(mail.created_at.timestamp())}@{domain}>"
    msg.set_content(mail.body_text)
    return msg


def describe_error(exc: BaseException, target: SmtpTarget | None = None) -> str:
    """A short, credential-free description for last_error and logs."""
    if isinstance(exc, ProviderError):
        text = exc.message
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        text = "recipient refused: " + "; ".join(
            f"{code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
            for code, msg in exc.recipients.values())
    elif isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        kind = "authentication failed" if isinstance(exc, smtplib.SMTPAuthenticationError) else "SMTP error"
        text = f"{kind}: {exc.smtp_code} {message}"
    elif isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        text = "timed out talking to the SMTP server"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"could not reach the SMTP server: {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    if target is not None:
        for secret in (target.password,):
            if secret:
                text = text.replace(secret, "***")
    return " ".join(text.split())[:300]


def _connect(target: SmtpTarget, timeout: float) -> smtplib.SMTP:
    """An open, authenticated SMTP session (runs in a worker thread)."""
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if target.implicit_tls:
        client = smtplib.SMTP_SSL(target.host, target.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=timeout)
    try:
        client.ehlo()
        encrypted = target.implicit_tls
        if not encrypted and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
            encrypted = True
        if target.username:
            if not encrypted and not target.loopback:
                raise ProviderError(PROVIDER, "the SMTP server offers no TLS; refusing to send credentials in clear text")
            client.login(target.username, target.password or "")
        return client
    except BaseException:
        client.close()
        raise


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


class OutboxWorker:
    """Sends due outbox rows. Create inside the running loop; ``run()`` until cancelled, or
    ``deliver_due()`` for one pass. ``wake()`` starts the next pass now (after an enqueue)."""

    def __init__(self, pool: Any, smtp_url: str, mail_from: str, *, batch: int = 20, poll_seconds: float = 1.0,
                 timeout: float = 10.0, backoff_base: float = 5.0, backoff_cap: float = 3600.0,
                 lease_seconds: float = 600.0) -> None:
        self.pool = pool  # an asyncpg pool
        self.target = parse_smtp_url(smtp_url)
        self.mail_from = mail_from
        self.envelope_from = parseaddr(mail_from)[1] or mail_from
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.timeout = timeout  # per SMTP socket operation
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        # Longer than a whole batch can take to send: a lease that expires mid-send would let
        # another worker send the same row again.
        self.lease_seconds = lease_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        """Nothing to release: SMTP connections live for one pass, and the pool is the caller's."""

    async def run(self) -> None:
        """Deliver forever; survives SMTP and database outages (logs, waits, tries again)."""
        while True:
            claimed = 0
            try:
                claimed, _ = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down, most likely: keep the loop alive
                log.warning("mail outbox pass failed", error=describe_error(exc, self.target))
            if claimed >= self.batch:
                continue  # more may be due right now
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def deliver_due(self) -> int:
        """One pass: claim up to ``batch`` due rows, try each; the number sent."""
        return (await self._pass())[1]

    async def _claim(self) -> list[OutboxMail]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(CLAIM_SQL, self.batch, self.lease_seconds)
        return sorted((OutboxMail(**dict(r)) for r in rows), key=lambda m: m.id)

    async def _mark_failed(self, mails: Sequence[OutboxMail], error: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.executemany(MARK_FAILED_SQL, [(m.id, error, self.backoff_base, self.backoff_cap) for m in mails])
        for mail in mails:
            log.warning("mail delivery failed; will retry", outbox_id=mail.id, error=error)

    async def _pass(self) -> tuple[int, int]:
        mails = await self._claim()
        if not mails:
            return 0, 0
        try:
            client = await asyncio.to_thread(_connect, self.target, self.timeout)
        except Exception as exc:
            await self._mark_failed(mails, describe_error(exc, self.target))
            return len(mails), 0
        sent = 0
        try:
            for index, mail in enumerate(mails):
                try:
                    message = build_message(mail, self.mail_from)
                except ValueError as exc:
                    async with self.pool.acquire() as conn:
                        await conn.execute(PARK_SQL, mail.id, f"permanent: cannot build the email ({exc})"[:300])
                    log.error("mail parked: cannot build the email", outbox_id=mail.id)
                    continue
                try:
                    await asyncio.to_thread(client.send_message, message, self.envelope_from,
                                            [parseaddr(mail.to_address)[1]])
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused,
                        smtplib.SMTPNotSupportedError) as exc:
                    await self._mark_failed([mail], describe_error(exc, self.target))  # this message only
                    continue
                except Exception as exc:
                    # The connection is gone: this row and the ones not yet tried wait for the next pass.
                    await self._mark_failed(mails[index:], describe_error(exc, self.target))
                    return len(mails), sent
                async with self.pool.acquire() as conn:
                    await conn.execute(MARK_SENT_SQL, mail.id)
                sent += 1
                log.info("mail sent", outbox_id=mail.id)
        finally:
            await asyncio.to_thread(_quit, client)
        return len(mails), sent
