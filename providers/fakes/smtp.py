"""A real local SMTP server (aiosmtpd) that keeps what it receives, for tests and sandbox mode.

    fake = await FakeSmtp(username="mailer", password="s3cret").start()
    fake.url                 # smtp://mailer:s3cret@127.0.0.1:<port>  (give this to the worker)
    fake.messages            # [ReceivedMail(mail_from, to, subject, body, message_id, headers)]
    await fake.wait_for(2)   # until two messages arrived (or TimeoutError)
    await fake.stop()        # an outage: connections are refused ...
    await fake.start()       # ... until it is back, on the same port
    fake.delay = 0.05        # each DATA takes this long (to overlap concurrent senders)

It speaks plain SMTP (no TLS) on 127.0.0.1. With a username, AUTH PLAIN/LOGIN is offered (over
plain text, which only loopback may do) and required before MAIL FROM.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd logs a deprecation warning on every successful AUTH (its own Session.login_data); quiet it.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str  # the envelope sender
    to: tuple[str, ...]  # the envelope recipients
    subject: str
    body: str  # the plain-text body
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)


class _Handler:
    def __init__(self, fake: "FakeSmtp") -> None:
        self.fake = fake

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list) -> str:
        # AUTH is enforced here rather than with aiosmtpd's auth_required, which warns loudly when
        # TLS is not also required (this fake is plain text on loopback by design).
        if self.fake.username and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fake.delay:
            await asyncio.sleep(self.fake.delay)
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        part = parsed.get_body(preferencelist=("plain",))
        body = part.get_content().replace("\r\n", "\n") if part is not None else ""
        mail = ReceivedMail(
            mail_from=envelope.mail_from, to=tuple(envelope.rcpt_tos), subject=str(parsed.get("Subject", "")),
            body=body, message_id=str(parsed.get("Message-ID", "")),
            headers={k: str(v) for k, v in parsed.items()},
        )
        with self.fake._lock:  # the server runs in the controller's thread
            self.fake.messages.append(mail)
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """aiosmtpd's Controller pokes host:port right after binding; with port 0 it must poke the real port."""

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class FakeSmtp:
    def __init__(self, *, username: str | None = None, password: str | None = None, port: int = 0,
                 delay: float = 0.0) -> None:
        self.username = username
        self.password = password
        self.port = port  # 0 until the first start picks a free one; restarts reuse it
        self.delay = delay
        self.messages: list[ReceivedMail] = []
        self.auth_failures = 0
        self._lock = threading.Lock()
        self._controller: _Controller | None = None

    @property
    def url(self) -> str:
        auth = f"{self.username}:{self.password}@" if self.username else ""
        return f"smtp://{auth}127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.username
              and auth_data.password.decode() == self.password)
        if not ok:
            self.auth_failures += 1
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235 or 535 itself

    def _start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.username:
            kwargs = dict(authenticator=self._authenticate, auth_require_tls=False)
        controller = _Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        controller.start()
        self.port = controller.port
        self._controller = controller

    def _stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def start(self) -> "FakeSmtp":
        if self._controller is None:
            await asyncio.to_thread(self._start)  # Controller.start blocks until the thread serves
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """The messages, once at least ``count`` have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake SMTP got {len(self.messages)} messages, expected {count}")
            await asyncio.sleep(0.02)
        return list(self.messages)
