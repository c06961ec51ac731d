"""sendmail channels with a fake sendmail program (a shell script this test writes: it records
its arguments, its stdin and its pid, and fails or hangs on demand), as a real MTA would be run;
and with Debian's msmtp delivering to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.notify import channels as notify
from shared.notify.channels import NotifyError
from shared.notify.messages import Message
from shared.settings import NotificationSettings
from tests.plugins.procs import free_port
from tests.plugins.smtp import SmtpServer

MESSAGE = Message(
    event="alert.raised:a1",
    kind="alert.raised",
    outcome="failure",
    title="[vbm] CRITICAL snapshot-left-behind (db)",
    lines=("the snapshot vbm-run-1 of db could not be removed", "", "Alert: a1"),
    severity="critical",
)
SCRIPT = """#!/bin/sh
printf '%s\\n' "$@" > {dir}/argv
echo $$ > {dir}/pid
cat > {dir}/stdin
if [ -f {dir}/hang ]; then exec sleep 60; fi
if [ -f {dir}/fail ]; then cat {dir}/fail >&2; exit 75; fi
exit 0
"""


@dataclass(frozen=True)
class FakeSendmail:
    dir: Path

    @property
    def path(self) -> str:
        return str(self.dir / "sendmail")

    def argv(self) -> list[str]:
        return (self.dir / "argv").read_text().splitlines()

    def mail(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes((self.dir / "stdin").read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@pytest.fixture
def fake_sendmail(tmp_path: Path) -> FakeSendmail:
    program = tmp_path / "sendmail"
    program.write_text(SCRIPT.format(dir=tmp_path))
    program.chmod(0o755)
    return FakeSendmail(tmp_path)


def sendmail(path: str, timeout: float = 5, **fields: Any) -> NotificationSettings:
    channel = {"name": "local", "type": "sendmail", "to": ["ops@example.com", "lead@example.com"],
               "sendmail": path} | fields  # fmt: skip
    return NotificationSettings.model_validate(
        {"channels": [channel], "timeout": timeout, "smtp": {"sender": "vbm@backup.example"}}
    )


async def test_the_mail_goes_to_sendmail_on_stdin_with_the_recipients_as_arguments(
    fake_sendmail: FakeSendmail,
) -> None:
    s = sendmail(fake_sendmail.path)
    await notify.send(s.channels[0], MESSAGE, s)
    assert fake_sendmail.argv() == ["-i", "--", "ops@example.com", "lead@example.com"]
    mail = fake_sendmail.mail()
    assert mail["Subject"] == MESSAGE.title and mail["From"] == "vbm@backup.example"
    assert mail["To"] == "ops@example.com, lead@example.com"
    assert mail["X-VBM-Outcome"] == "failure" and mail["X-VBM-Level"] == "critical"
    assert "could not be removed" in mail.get_content()


async def test_a_failing_or_missing_sendmail_says_why(fake_sendmail: FakeSendmail, tmp_path: Path) -> None:
    (fake_sendmail.dir / "fail").write_text("sendmail: fatal: ops@example.com: unknown user\n\n")
    s = sendmail(fake_sendmail.path)
    expected = rf"sendmail channel 'local': {fake_sendmail.path} exited with code 75: sendmail: fatal: ops@"
    with pytest.raises(NotifyError, match=expected + r"example\.com: unknown user$"):
        await notify.send(s.channels[0], MESSAGE, s)

    missing = sendmail(str(tmp_path / "no-such-sendmail"))
    with pytest.raises(NotifyError, match=r"no-such-sendmail does not exist: install a mail transfer agent"):
        await notify.send(missing.channels[0], MESSAGE, missing)
    plain = tmp_path / "not-a-program"
    plain.write_text("hello")
    refused = sendmail(str(plain))
    with pytest.raises(NotifyError, match=r"not-a-program cannot be run \(not executable\)"):
        await notify.send(refused.channels[0], MESSAGE, refused)


async def test_a_hanging_sendmail_is_killed_at_the_timeout(fake_sendmail: FakeSendmail) -> None:
    (fake_sendmail.dir / "hang").touch()
    s = sendmail(fake_sendmail.path, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(NotifyError, match=r"did not finish within 0\.5 s and was killed"):
        await notify.send(s.channels[0], MESSAGE, s)
    assert time.monotonic() - started < 3
    pid = int((fake_sendmail.dir / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: no zombie left either
        os.kill(pid, 0)


async def test_debians_msmtp_as_sendmail_delivers_to_a_real_smtp_server(
    smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """msmtp (Debian's `msmtp`; `msmtp-mta` makes it /usr/sbin/sendmail) with the same command line,
    through a wrapper that names the server as msmtp's system configuration would."""
    msmtp = shutil.which("msmtp")
    if msmtp is None:
        pytest.fail("msmtp is missing: run scripts/install-system-deps.sh --for-tests (it installs msmtp)")

    def wrapper(name: str, port: int) -> str:
        path = tmp_path / name
        path.write_text(
            f"#!/bin/sh\nexec {msmtp} --host=127.0.0.1 --port={port} --auth=off --tls=off"
            ' --from=vbm@backup.example "$@"\n'
        )
        path.chmod(0o755)
        return str(path)

    s = sendmail(wrapper("sendmail", smtp_server.port))
    await notify.send(s.channels[0], MESSAGE, s)
    [mail] = smtp_server.wait_for(1)
    assert mail["Subject"] == MESSAGE.title and mail["X-VBM-Level"] == "critical"
    assert smtp_server.received[0].rcpt_tos == ("ops@example.com", "lead@example.com")

    down = sendmail(wrapper("sendmail-down", free_port()))
    refused = r"sendmail-down exited with code \d+: msmtp: cannot connect to 127\.0\.0\.1, port \d+"
    with pytest.raises(NotifyError, match=refused):
        await notify.send(down.channels[0], MESSAGE, down)


def test_bad_sendmail_settings_say_what_to_fix() -> None:
    cases = [
        ({"sendmail": "sendmail"}, "`sendmail` must be an absolute path"),
        ({"to": []}, "a sendmail channel needs `to`"),
        ({"to": ["-oQ/tmp/x@y"]}, "not an email address: -oQ/tmp/x@y"),
    ]
    for fields, expected in cases:
        with pytest.raises(ValidationError, match=expected):
            sendmail("/usr/sbin/sendmail", **fields)
    s = sendmail("/usr/sbin/sendmail")
    view = notify.channel_view(s.channels[0], s)
    assert view["endpoint"] == "/usr/sbin/sendmail" and view["sendmail"] == "/usr/sbin/sendmail"
