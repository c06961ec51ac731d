"""Mail channels: `email` sends through the SMTP server of `notifications.smtp`; `sendmail` hands
the same mail to the local sendmail program (`<sendmail> -i -- <recipients...>`, the mail on its
stdin), which Postfix, Exim, msmtp and nullmailer all provide. Both raise NotifyError naming the
channel and the reason, never the SMTP password.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from shared.notify.errors import NotifyError
from shared.notify.messages import Message
from shared.settings import ChannelSettings, NotificationSettings

STDERR_SHOWN = 500  # characters of sendmail's complaint kept in the error


def compose(channel: ChannelSettings, message: Message, sender: str) -> EmailMessage:
    """The mail both mail channels send: the title as subject, the text as the plain body."""
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = sender
    mail["To"] = ", ".join(channel.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1] or None)
    mail["X-VBM-Event"] = message.kind
    mail["X-VBM-Outcome"] = message.outcome
    mail["X-VBM-Level"] = message.level
    mail.set_content(message.text + "\n")
    return mail


def send_smtp(channel: ChannelSettings, message: Message, settings: NotificationSettings) -> None:
    """Blocking: call it through a thread."""
    smtp = settings.smtp
    mail = compose(channel, message, smtp.sender)
    context = ssl.create_default_context(cafile=smtp.ca_file)
    where = f"{smtp.host}:{smtp.port}"
    try:
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=settings.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=settings.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password.get_secret_value())
            client.send_message(mail)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(
            f"email channel {channel.name!r}: {where} refused the login of {smtp.username!r}"
            f" ({exc.smtp_code}); check notifications.smtp.username and password"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyError(
            f"email channel {channel.name!r}: {where} refused the recipients {', '.join(exc.recipients)}"
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise NotifyError(
            f"email channel {channel.name!r}: {where} does not offer STARTTLS;"
            " set notifications.smtp.security to tls (port 465) or none (a trusted local relay)"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"email channel {channel.name!r}: {where}: {exc or type(exc).__name__}") from None


def sendmail_args(channel: ChannelSettings) -> list[str]:
    """The command line: recipients as arguments (not `-t`), after `--` so none is an option."""
    return [channel.sendmail, "-i", "--", *channel.to]


async def send_sendmail(channel: ChannelSettings, message: Message, settings: NotificationSettings) -> None:
    """Run the sendmail program with the mail on stdin; a non-zero exit is a NotifyError with its
    stderr and exit code. Cancelled (the channel's timeout), it is killed and reaped."""
    name, program = channel.name, channel.sendmail
    data = bytes(compose(channel, message, settings.smtp.sender))
    try:
        proc = await asyncio.create_subprocess_exec(
            *sendmail_args(channel),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise NotifyError(
            f"sendmail channel {name!r}: {program} does not exist: install a mail transfer agent"
            " (e.g. Debian's msmtp-mta, postfix or nullmailer) or set the channel's `sendmail` path"
        ) from None
    except PermissionError:
        raise NotifyError(f"sendmail channel {name!r}: {program} cannot be run (not executable)") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in a configured path
        why = getattr(exc, "strerror", None) or exc
        raise NotifyError(f"sendmail channel {name!r}: {program} cannot be run: {why}") from None
    try:
        _, err = await proc.communicate(data)
    finally:
        if proc.returncode is None:  # cancelled by the timeout: it must not linger
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        complaint = err.decode(errors="replace").strip()[-STDERR_SHOWN:]
        raise NotifyError(
            f"sendmail channel {name!r}: {program} exited with {_status(proc.returncode)}"
            + (f": {complaint}" if complaint else " and said nothing on stderr")
        )


def _status(code: int | None) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"code {code}"
