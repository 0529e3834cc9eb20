"""Sending e-mail: a small port, an SMTP adapter for real use, a recording one for tests.

Shared by every service that mails people (orders' renewal notices, the ledger's
low-balance notices). Jobs talk to :class:`Mailer` only, so the rules of who is told
what and when are tested without a mail server, and the SMTP adapter is tested against
a real one on loopback.
"""

from __future__ import annotations

import dataclasses
import logging
import smtplib
import ssl
import threading
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from chancery_shared import config as cfg

log = logging.getLogger(__name__)


class MailNotSent(Exception):
    """The message could not be handed to the mail server (nobody accepted it)."""


@dataclasses.dataclass(frozen=True)
class Mail:
    """One plain-text message to several people of the same account."""

    to: tuple[str, ...]
    subject: str
    body: str


class Mailer(Protocol):
    def send(self, mail: Mail) -> list[str]:
        """Hand ``mail`` over; the addresses the server accepted (MailNotSent if none)."""


@dataclasses.dataclass(frozen=True)
class SmtpSettings:
    """Where notices go out; no host means notices are disabled."""

    host: str = cfg.setting("CHANCERY_SMTP_HOST", "")
    port: int = cfg.setting("CHANCERY_SMTP_PORT", 25, cfg.parse_port)
    sender: str = cfg.setting("CHANCERY_SMTP_FROM", "")
    starttls: bool = cfg.setting("CHANCERY_SMTP_STARTTLS", False, cfg.parse_bool)
    username: str = cfg.setting("CHANCERY_SMTP_USERNAME", "")
    password: str = cfg.setting("CHANCERY_SMTP_PASSWORD", "", secret=True)
    timeout_seconds: float = cfg.setting("CHANCERY_SMTP_TIMEOUT_SECONDS", 30.0,
                                         cfg.parse_positive_float)

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    def check(self) -> None:
        """Refuse at start-up a configuration that would fail on the first notice."""
        problems = {}
        if self.host and not self.sender:
            problems["CHANCERY_SMTP_FROM"] = "is required when CHANCERY_SMTP_HOST is set"
        if bool(self.username) != bool(self.password):
            problems["CHANCERY_SMTP_USERNAME"] = ("CHANCERY_SMTP_USERNAME and "
                                                  "CHANCERY_SMTP_PASSWORD go together")
        if problems:
            raise cfg.ConfigError(problems)


class SmtpMailer:
    """Sends through an SMTP relay (smtplib), one connection per message.

    With STARTTLS the server's certificate is verified against the system's trust
    store. Credentials are sent only after STARTTLS or to a relay on loopback: smtplib
    would send them in clear text to any server offering AUTH.
    """

    def __init__(self, settings: SmtpSettings):
        self.settings = settings

    def send(self, mail: Mail) -> list[str]:
        s = self.settings
        message = _message(s.sender, mail)
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds) as smtp:
                smtp.ehlo()
                if s.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if s.username:
                    if not s.starttls and s.host not in ("127.0.0.1", "::1", "localhost"):
                        raise MailNotSent("refusing to send SMTP credentials without "
                                          "STARTTLS (set CHANCERY_SMTP_STARTTLS=true)")
                    smtp.login(s.username, s.password)
                refused = smtp.send_message(message, from_addr=s.sender,
                                            to_addrs=list(mail.to))
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailNotSent(f"every recipient was refused: {sorted(exc.recipients)}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise MailNotSent(f"{s.host}:{s.port}: {exc}") from exc
        if refused:
            log.warning("the mail server refused some recipients of %r: %s", mail.subject,
                        sorted(refused))
        return [address for address in mail.to if address not in refused]


class RecordingMailer:
    """Keeps what it was asked to send (unit tests); ``fail`` makes it refuse."""

    def __init__(self, *, fail: bool = False):
        self.sent: list[Mail] = []
        self.fail = fail
        self._lock = threading.Lock()

    def send(self, mail: Mail) -> list[str]:
        if self.fail:
            raise MailNotSent("the recording mailer was told to fail")
        with self._lock:
            self.sent.append(mail)
        return list(mail.to)


def _message(sender: str, mail: Mail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(mail.to)
    message["Subject"] = mail.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain_of(sender))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies
    message.set_content(mail.body)
    return message


def _domain_of(address: str) -> str | None:
    address = address.strip().rstrip(">")
    return address.rsplit("@", 1)[1] if "@" in address else None


def recipients(*groups: Sequence[str | None]) -> tuple[str, ...]:
    """Addresses from several lists, without blanks or repeats (case-insensitively)."""
    seen: dict[str, str] = {}
    for group in groups:
        for address in group:
            if address and address.strip():
                seen.setdefault(address.strip().lower(), address.strip())
    return tuple(seen.values())
