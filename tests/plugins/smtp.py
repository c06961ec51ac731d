"""A real SMTP server for tests: ``aiosmtpd`` on a free loopback port, in a thread.

``smtp_server.messages`` holds every accepted message parsed as ``email.message.EmailMessage``
(``email.policy.default``); ``wait_for(n, timeout)`` blocks until ``n`` have arrived.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest

from tests.plugins.procs import fail_missing, free_port

__all__ = ["ReceivedMail", "SmtpServer"]

SMTP_INSTALL_HINT = (
    "run `make test`, which installs the dev dependencies into .venv "
    "(`.venv/bin/pip install -e '.[dev]'`, including `aiosmtpd`)"
)


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted message: the SMTP envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes


class _CollectingHandler:
    """aiosmtpd handler: parse and keep every message (runs in the server's thread)."""

    def __init__(self) -> None:
        self.received: list[ReceivedMail] = []
        self.condition = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        raw_bytes = raw if isinstance(raw, bytes) else str(raw).encode()
        # SMTP carries CRLF line ends; parse with "\n" ones so bodies read like what was sent.
        message = email.message_from_bytes(raw_bytes.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
            message=message,
            raw=raw_bytes,
        )
        with self.condition:
            self.received.append(mail)
            self.condition.notify_all()
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd ``Controller`` on 127.0.0.1:<free port>; ``start()``/``stop()`` (joins its thread)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        """With `login` (user, password), AUTH is offered (without TLS) and checked."""
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:
            fail_missing(f"aiosmtpd is not importable ({exc}): {SMTP_INSTALL_HINT}")
        self.host = "127.0.0.1"
        self.port: int = free_port()
        self._handler = _CollectingHandler()
        self.logins: list[tuple[str, bool]] = []  # (user, accepted) of each AUTH
        auth: dict[str, Any] = {}
        if login is not None:
            auth = {
                "authenticator": self._authenticator(login),
                "auth_require_tls": False,
            }
        self._controller = Controller(
            self._handler,
            hostname=self.host,
            port=self.port,
            server_hostname="vbm-test-smtp",
            ready_timeout=10,
            enable_SMTPUTF8=True,
            **auth,
        )
        self._started = False

    def _authenticator(self, login: tuple[str, str]) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == login
            self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
            return AuthResult(success=ok, handled=False)  # handled=True would leave a refusal unanswered

        return check

    def __repr__(self) -> str:
        return f"<SmtpServer {self.host}:{self.port} messages={len(self.received)}>"

    def start(self) -> SmtpServer:
        self._controller.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._controller.stop()
            self._started = False

    @property
    def received(self) -> list[ReceivedMail]:
        """Envelopes and messages in arrival order (a snapshot)."""
        with self._handler.condition:
            return list(self._handler.received)

    @property
    def messages(self) -> list[EmailMessage]:
        """Parsed messages in arrival order (a snapshot)."""
        return [mail.message for mail in self.received]

    def clear(self) -> None:
        with self._handler.condition:
            self._handler.received.clear()

    def wait_for(self, n: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        """Block until at least ``n`` messages arrived; return them. AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._handler.condition:
            while len(self._handler.received) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {n} message(s) at {self.host}:{self.port} within {timeout}s, "
                        f"got {len(self._handler.received)}"
                    )
                self._handler.condition.wait(remaining)
            return [mail.message for mail in self._handler.received]


@pytest.fixture
def smtp_login_server() -> Iterator[SmtpServer]:
    """A private SMTP server that offers AUTH (checking vbm-mailer / Smtp-pw-7c1e; no TLS)."""
    server = SmtpServer(login=("vbm-mailer", "Smtp-pw-7c1e")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A private SMTP server (no auth, no TLS) collecting messages; stopped after the test."""
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()
