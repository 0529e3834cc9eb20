"""Sending e-mail: moved to :mod:`chancery_shared.mail` (the ledger mails people too).

Re-exported here so that orders' imports keep working unchanged.
"""

from __future__ import annotations

from chancery_shared.mail import (
    Mail,
    Mailer,
    MailNotSent,
    RecordingMailer,
    SmtpMailer,
    SmtpSettings,
    recipients,
)

__all__ = ["Mail", "Mailer", "MailNotSent", "RecordingMailer", "SmtpMailer", "SmtpSettings",
           "recipients"]
