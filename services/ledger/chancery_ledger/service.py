"""Wiring of the ledger service."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from datetime import datetime

from chancery_shared import config as cfg
from chancery_shared.mail import Mailer, SmtpMailer, SmtpSettings
from chancery_shared.messaging.consumer import Handler, MessageConsumer
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.service import BackgroundJob, Runtime, Service

from chancery_ledger import handlers, messages, model, report_views, views
from chancery_ledger.payments import PaymentProcessor, build_processor

log = logging.getLogger(__name__)
#: Messages the consumer applies per transaction, at most its prefetch (ledger's handlers in
#: messages.py never commit themselves): chancery_shared.messaging.consumer.
CONSUMER_BATCH = 10


@dataclasses.dataclass(frozen=True)
class LedgerSettings:
    payment_processor: str = cfg.setting("CHANCERY_LEDGER_PAYMENT_PROCESSOR", "test")
    # how often pending low-balance e-mails are sent (and failed ones retried)
    notice_seconds: float = cfg.setting("CHANCERY_LEDGER_NOTICE_SECONDS", 60.0,
                                        cfg.parse_positive_float)


class LedgerService(Service):
    name = "ledger"
    api_name = "ledger"
    title = "Chancery ledger"
    description = ("Account balances in integer cents kept in a double-entry journal: "
                   "deposits, receipts, and the reservations and captures of the order saga.")
    metadata = model.metadata
    messaging = model.messaging

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.settings = cfg.load(LedgerSettings, runtime.environ)
        try:
            self.payment_processor: PaymentProcessor = build_processor(
                self.settings.payment_processor)
        except ValueError as exc:
            raise cfg.ConfigError({"CHANCERY_LEDGER_PAYMENT_PROCESSOR": str(exc)}) from exc
        smtp = cfg.load(SmtpSettings, runtime.environ)
        smtp.check()
        # low-balance e-mails; None (no CHANCERY_SMTP_HOST): events only, mails skipped
        self.mailer: Mailer | None = SmtpMailer(smtp) if smtp.enabled else None
        if self.payment_processor.name == "test":
            log.warning("ledger uses the test payment processor: card deposits move no real "
                        "money (set CHANCERY_LEDGER_PAYMENT_PROCESSOR)")

    def blueprints(self):
        return [views.api, report_views.api]

    def background_jobs(self) -> list[BackgroundJob]:
        return [self._notice_job]

    def send_notices(self, now: datetime | None = None) -> handlers.NoticeRun:
        """One pass: send the low-balance e-mails due (retrying failed ones)."""
        return handlers.send_pending_notices(self.uow, self.mailer, now or utcnow())

    def _notice_job(self, stop: threading.Event) -> None:
        """Pending notices, every CHANCERY_LEDGER_NOTICE_SECONDS, until ``stop``."""
        while not stop.wait(self.settings.notice_seconds):
            try:
                run = self.send_notices()
                if run.sent or run.failed:
                    log.info("low-balance notices: %d sent, %d to retry", len(run.sent),
                             len(run.failed))
            except Exception:  # noqa: BLE001 - keep the job alive; the next pass retries
                log.exception("the low-balance notice pass failed")

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        return {"ledger.events": messages.HANDLERS}

    def consumers(self, prefetch: int = 10) -> list[MessageConsumer]:
        consumers = super().consumers(prefetch)
        for consumer in consumers:
            consumer.batch_size = CONSUMER_BATCH
        return consumers
