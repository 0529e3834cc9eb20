"""Wiring of the orders service."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import flask_smorest
from chancery_shared.messaging.consumer import Handler
from chancery_shared.service import Service

from chancery_orders import catalog, messages, model, views

log = logging.getLogger(__name__)
QUEUE = "orders.events"


class OrdersService(Service):
    name = "orders"
    api_name = "orders"
    title = "Chancery orders"
    description = ("The registration authority: the product catalog, domain validation and "
                   "certificate orders from request to issuance.")
    metadata = model.metadata
    messaging = model.messaging

    def blueprints(self) -> list[flask_smorest.Blueprint]:
        return [views.api]

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        return {QUEUE: messages.HANDLERS}

    def migrate(self) -> None:
        """Upgrade the schema, then load the product catalog (a data step, idempotent)."""
        super().migrate()
        self.load_catalog()

    def load_catalog(self, path: Path = catalog.CATALOG_FILE) -> list[str]:
        with self.uow() as uow:
            changed = catalog.load_catalog(uow.session, path)
            uow.commit()
        return changed
