"""Email delivery over SMTP (smtplib), optionally with STARTTLS and a login.

The password is read from its reference only for the login, and no error message carries it. Each failure
says whether the message may have arrived (``uncertain``: the connection failed once the message itself was
going out, before the server's answer to it), so a retry never sends a notification twice. Once the server has
taken the message, nothing after (its QUIT) can fail the delivery.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

from worker.errors import DeliveryFailed, SecretUnavailable
from worker.notifications.channels import EmailSettings
from worker.notifications.model import Notification
from worker.secrets import read_secret

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["DEFAULT_TIMEOUT_S", "build_message", "send_email"]

DEFAULT_TIMEOUT_S = 10.0


def build_message(settings: EmailSettings, notification: Notification) -> EmailMessage:
    """The email for ``notification``: subject names kind and tenant, body the message and details."""
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Subject"] = f"[crmsync] {notification.kind}: {notification.tenant}"
    message["Date"] = formatdate(notification.at.timestamp(), usegmt=True)
    # One id per notification, so a mail system that drops repeated messages drops a repeat of this one.
    message["Message-ID"] = f"<{notification.id}@crmsync.invalid>"
    details = json.dumps(notification.details, indent=2, sort_keys=True)
    message.set_content(
        f"{notification.message}\n\n"
        f"kind:    {notification.kind}\ntenant:  {notification.tenant}\nat:      {notification.at.isoformat()}\n"
        f"id:      {notification.id}\n\ndetails:\n{details}\n"
    )
    return message


def send_email(settings: EmailSettings, notification: Notification, *,
               timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Send ``notification`` to every recipient; raise ``DeliveryFailed`` if the server does not take it."""
    name = f"SMTP {settings.host}:{settings.port}"
    try:
        password = read_secret(settings.password_ref) if settings.password_ref else None
    except SecretUnavailable as exc:
        raise DeliveryFailed(f"{name}: password {exc}", permanent=True) from None
    server: _Connection | None = None
    try:
        server = _Connection(settings.host, settings.port, timeout=timeout)
        if settings.starttls:
            server.starttls(context=ssl.create_default_context())
        if settings.username and password is not None:
            server.login(settings.username, password)
        refused = server.send_message(build_message(settings, notification))
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"{name}: login refused ({exc.smtp_code})", permanent=True) from None
    except smtplib.SMTPResponseException as exc:
        # 5xx is the server's final word; 4xx (greylisting, busy) is worth another try.
        raise DeliveryFailed(f"{name}: {exc.smtp_code} {_reply(exc.smtp_error)}",
                             permanent=exc.smtp_code >= 500) from None
    except smtplib.SMTPRecipientsRefused as exc:
        # 4xx for every recipient (greylisting, a full mailbox) is worth another try; a 5xx for any is final.
        temporary = all(400 <= code < 500 for code, _ in exc.recipients.values())
        raise DeliveryFailed(f"{name}: every recipient refused ({', '.join(map(str, exc.recipients))})",
                             permanent=not temporary) from None
    except (smtplib.SMTPException, OSError) as exc:
        if server is not None and server.handed_over:
            raise DeliveryFailed(f"{name}: {type(exc).__name__} while the message was going out (no answer to it)",
                                 uncertain=True) from None
        raise DeliveryFailed(f"{name}: {type(exc).__name__} (connection failed)") from None
    finally:
        if server is not None:
            _close(server)
    if refused:
        raise DeliveryFailed(f"{name}: recipients refused: {', '.join(sorted(refused))}", permanent=True)


class _Connection(smtplib.SMTP):
    """``smtplib.SMTP`` noting when the message itself starts going out (the DATA stage): from then on a failure
    without an answer may come after the server took it."""

    handed_over = False

    def data(self, msg: Buffer | str) -> tuple[int, bytes]:
        """Send the message (see ``smtplib.SMTP.data``), noting first that it is going out."""
        self.handed_over = True
        return super().data(msg)


def _close(server: smtplib.SMTP) -> None:
    """Say QUIT if the connection still takes it, then close it: its outcome changes nothing."""
    try:
        server.quit()
    except (smtplib.SMTPException, OSError):
        server.close()


def _reply(error: bytes | str) -> str:
    text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
    return " ".join(text.split())[:200]
