"""Wiring of the audit service."""

from __future__ import annotations

from collections.abc import Mapping

import flask_smorest
from chancery_shared.messaging.consumer import Handler
from chancery_shared.service import Service

from chancery_audit import messages, model, views

AUDIT_QUEUE = "audit.all"


class AuditService(Service):
    name = "audit"
    api_name = "audit"
    title = "Chancery audit"
    description = ("Every account's audit log, recorded from every message on the bus: who did "
                   "what, when, from where, to what.")
    metadata = model.metadata
    messaging = model.messaging

    def blueprints(self) -> list[flask_smorest.Blueprint]:
        return [views.api]

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        return {AUDIT_QUEUE: {"#": messages.on_any_message}}
