"""Wiring of the ledger service."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from chancery_shared import config as cfg
from chancery_shared.messaging.consumer import Handler
from chancery_shared.service import Runtime, Service

from chancery_ledger import messages, model, views
from chancery_ledger.payments import PaymentProcessor, build_processor

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LedgerSettings:
    payment_processor: str = cfg.setting("CHANCERY_LEDGER_PAYMENT_PROCESSOR", "test")


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
        if self.payment_processor.name == "test":
            log.warning("ledger uses the test payment processor: card deposits move no real "
                        "money (set CHANCERY_LEDGER_PAYMENT_PROCESSOR)")

    def blueprints(self):
        return [views.api]

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        return {"ledger.events": messages.HANDLERS}
