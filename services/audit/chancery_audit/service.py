"""Wiring of the audit service."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping

import flask_smorest
from chancery_shared import config as cfg
from chancery_shared.messaging.consumer import Handler, MessageConsumer
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.service import Runtime, Service

from chancery_audit import checkpoints, messages, model, views

log = logging.getLogger(__name__)
AUDIT_QUEUE = "audit.all"
DEV_KEY_PASSPHRASE = "chancery-dev-audit-key-passphrase"
#: Messages the audit consumer records per transaction (at most its prefetch; the handler
#: never commits itself): see chancery_shared.messaging.consumer and docs/performance.md.
AUDIT_BATCH = 10


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    # encrypts the Ed25519 key that signs checkpoints
    key_passphrase: str = cfg.setting("CHANCERY_AUDIT_KEY_PASSPHRASE", DEV_KEY_PASSPHRASE,
                                      secret=True)
    # how often every log that grew gets a signed checkpoint of its head
    checkpoint_seconds: float = cfg.setting("CHANCERY_AUDIT_CHECKPOINT_SECONDS", 300.0,
                                            parse=float)


class AuditService(Service):
    name = "audit"
    api_name = "audit"
    title = "Chancery audit"
    description = ("Every account's audit log, recorded from every message on the bus: who did "
                   "what, when, from where, to what; hash-chained and checkpointed.")
    metadata = model.metadata
    messaging = model.messaging

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        self.settings = cfg.load(AuditSettings, runtime.environ)
        if self.settings.key_passphrase == DEV_KEY_PASSPHRASE:
            log.warning("audit checkpoints are signed with a key under the development "
                        "passphrase; set CHANCERY_AUDIT_KEY_PASSPHRASE")
        self.signer = checkpoints.CheckpointSigner(self.settings.key_passphrase.encode())

    def blueprints(self) -> list[flask_smorest.Blueprint]:
        return [views.api]

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        return {AUDIT_QUEUE: {"#": messages.on_any_message}}

    def consumers(self, prefetch: int = 10) -> list[MessageConsumer]:
        consumers = super().consumers(prefetch)
        for consumer in consumers:
            consumer.batch_size = AUDIT_BATCH
        return consumers

    def background_jobs(self) -> list[Callable[[threading.Event], None]]:
        return [self._checkpoint_job]

    def _checkpoint_job(self, stop: threading.Event) -> None:
        """Every CHANCERY_AUDIT_CHECKPOINT_SECONDS: checkpoint each log that grew."""
        while not stop.wait(self.settings.checkpoint_seconds):
            self.sign_checkpoints()

    def sign_checkpoints(self) -> list[str]:
        try:
            return checkpoints.sign_due_checkpoints(self.uow, self.signer, utcnow())
        except Exception:
            log.exception("signing audit checkpoints failed; retrying at the next check")
            return []
