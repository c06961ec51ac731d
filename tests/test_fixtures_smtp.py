"""The SMTP fixture: a real aiosmtpd server that collects what the code under test sends."""

from __future__ import annotations

import smtplib
import threading
from email.message import EmailMessage

import pytest

from tests.plugins.smtp import SmtpServer


def _mail(subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "vbm@example.test"
    msg["To"] = "ops@example.test"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def test_send_and_read_back(smtp_server: SmtpServer) -> None:
    assert smtp_server.host == "127.0.0.1"
    assert smtp_server.port not in (25, 587)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.send_message(_mail("Backup failed: vm-42 ✗", "Snapshot timed out.\nRetrying at 02:00."))
    [message] = smtp_server.wait_for(1, timeout=5)
    assert message["Subject"] == "Backup failed: vm-42 ✗"
    assert message["To"] == "ops@example.test"
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_content() == "Snapshot timed out.\nRetrying at 02:00.\n"
    [received] = smtp_server.received
    assert received.mail_from == "vbm@example.test"
    assert received.rcpt_tos == ("ops@example.test",)


def test_wait_for_several_messages_sent_from_another_thread(smtp_server: SmtpServer) -> None:
    def send() -> None:
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
            for i in range(3):
                client.send_message(_mail(f"report {i}", f"body {i}"))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        messages = smtp_server.wait_for(3, timeout=10)
    finally:
        sender.join()
    assert [m["Subject"] for m in messages] == ["report 0", "report 1", "report 2"]


def test_wait_for_times_out_clearly(smtp_server: SmtpServer) -> None:
    with pytest.raises(AssertionError, match="expected 1 message"):
        smtp_server.wait_for(1, timeout=0.2)
    assert smtp_server.messages == []
