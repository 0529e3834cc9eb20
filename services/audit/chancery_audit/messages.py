"""audit's message entrypoint: every message on the bus becomes one entry."""

from __future__ import annotations

from chancery_shared.messaging.envelope import Envelope
from chancery_shared.messaging.unit_of_work import UnitOfWork

from chancery_audit import handlers


def on_any_message(envelope: Envelope, uow: UnitOfWork) -> None:
    """Record ``envelope``; the consumer commits it with the inbox row."""
    handlers.record_entry(uow, envelope)
