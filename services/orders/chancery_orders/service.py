"""Wiring of the orders service."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import flask_smorest
from chancery_shared import config as cfg
from chancery_shared.messaging.consumer import Handler, MessageConsumer
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import BackgroundJob, Runtime, Service

from chancery_orders import (
    caa,
    catalog,
    lifecycle,
    lifecycle_views,
    messages,
    model,
    notice_views,
    notices,
    organization_views,
    validation,
    validation_views,
    views,
)

log = logging.getLogger(__name__)
#: Messages the consumer applies per transaction, at most its prefetch (orders' saga answers in
#: messages.py never commit themselves): chancery_shared.messaging.consumer.
CONSUMER_BATCH = 10
QUEUE = "orders.events"


class OrdersService(Service):
    name = "orders"
    api_name = "orders"
    title = "Chancery orders"
    description = ("The registration authority: the product catalog, domain validation and "
                   "certificate orders from request to issuance.")
    metadata = model.metadata
    messaging = model.messaging

    def __init__(self, runtime: Runtime):
        super().__init__(runtime)
        # SMTP and renewal-check settings, validated now (a bad value stops the start)
        self.renewal_notices = notices.RenewalNotices.from_environment(self.uow,
                                                                       runtime.environ)
        self.lifecycle = cfg.load(lifecycle.LifecycleSettings, runtime.environ)
        # DNS resolver, HTTP fetch and re-check settings for domain validation
        self.domain_validation = validation.DomainValidation.from_environment(runtime.environ)
        # CAA before every signing (issuer domains, DNS resolver); logged loudly when off
        self.caa = caa.from_environment(runtime.environ)
        # "now" for the lifecycle rules (refund window, plans); tests move it
        self.clock: Callable[[], datetime] = utcnow

    def uow(self) -> UnitOfWork:
        """A unit of work that also carries this service's CAA checker and the ECDSA
        curves on offer to the handlers."""
        uow = super().uow()
        uow.caa = self.caa  # type: ignore[attr-defined]
        uow.subscriber_curves = frozenset(  # type: ignore[attr-defined]
            self.platform.subscriber_curves)
        uow.debian_weak_keys = self.platform.debian_weak_keys  # type: ignore[attr-defined]
        return uow

    def blueprints(self) -> list[flask_smorest.Blueprint]:
        return [views.api, notice_views.api, lifecycle_views.api, validation_views.api,
                organization_views.api]

    def background_jobs(self) -> list[BackgroundJob]:
        return [self.renewal_notices.job, self._lifecycle_job, self._domain_validation_job]

    def _domain_validation_job(self, stop: threading.Event) -> None:
        """Domain expiry and re-checks, every CHANCERY_DOMAIN_RECHECK_SECONDS."""
        validation.job(self.uow, self.domain_validation, lambda: self.clock(), stop)

    def run_domain_checks(self, now: datetime | None = None) -> validation.DomainCheckRun:
        return validation.run_domain_checks(self.uow, self.domain_validation,
                                            now or self.clock())

    def _lifecycle_job(self, stop: threading.Event) -> None:
        """Plans' automatic reissues and expiry, every lifecycle interval (hourly)."""
        while not stop.wait(self.lifecycle.interval_seconds):
            try:
                self.run_lifecycle()
            except Exception:  # noqa: BLE001 - keep the job alive; the next pass retries
                log.exception("orders lifecycle pass failed")

    def run_lifecycle(self, now: datetime | None = None) -> lifecycle.LifecycleRun:
        return lifecycle.run_lifecycle(self.uow, now or self.clock(),
                                       reissue_before=self.lifecycle.reissue_before,
                                       notice_before=self.lifecycle.notice_before,
                                       mailer=self.renewal_notices.mailer)

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        return {QUEUE: messages.HANDLERS}

    def consumers(self, prefetch: int = 10) -> list[MessageConsumer]:
        consumers = super().consumers(prefetch)
        for consumer in consumers:
            consumer.batch_size = CONSUMER_BATCH
        return consumers

    def migrate(self) -> None:
        """Upgrade the schema, then load the product catalog (a data step, idempotent)."""
        super().migrate()
        self.load_catalog()

    def load_catalog(self, path: Path = catalog.CATALOG_FILE) -> list[str]:
        with self.uow() as uow:
            changed = catalog.load_catalog(uow.session, path)
            uow.commit()
        return changed
