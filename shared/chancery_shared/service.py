"""What a service is to the processes that host it.

Each service package subclasses :class:`Service` and registers it under the
``chancery.services`` entry-point group. The hosts — the embedded process, gunicorn,
the relay and consumer processes, the CLI — build services only through this class,
so the same code runs in every mode and only configuration (URLs) differs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import flask_smorest
from flask import Flask, current_app
from sqlalchemy import MetaData

from chancery_shared import config as cfg
from chancery_shared import db, migrations
from chancery_shared.auth import revocations
from chancery_shared.auth.tokens import TokenVerifier, http_jwks_fetcher
from chancery_shared.messaging import broker
from chancery_shared.messaging.broadcast import BroadcastListener
from chancery_shared.messaging.consumer import Handler, MessageConsumer
from chancery_shared.messaging.relay import OutboxRelay
from chancery_shared.messaging.tables import MessagingTables
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.app import create_app
from chancery_shared.web.idempotency import IdempotencyKeys

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "chancery.services"


@dataclasses.dataclass
class Runtime:
    """What the hosting process gives a service: its environment and shared plumbing."""

    environ: Mapping[str, str]
    platform: cfg.PlatformSettings
    jwks_fetcher: Callable[[], dict[str, Any]] | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        environ = dict(os.environ if environ is None else environ)
        return cls(environ=environ, platform=cfg.load(cfg.PlatformSettings, environ))


BackgroundJob = Callable[[threading.Event], None]


class Service:
    """Base of every service: database, unit of work, app, relay, consumers, migrations."""

    name: ClassVar[str]            # "orders", "ca-signer"
    api_name: ClassVar[str]        # path segment: /api/<api_name>/...
    title: ClassVar[str]
    description: ClassVar[str]
    metadata: ClassVar[MetaData]
    messaging: ClassVar[MessagingTables]
    migrations_dir: ClassVar[Path]  # default: the "migrations" folder beside the subclass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "migrations_dir" not in cls.__dict__:
            module = sys.modules[cls.__module__]
            cls.migrations_dir = Path(module.__file__ or ".").parent / "migrations"

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.platform = runtime.platform
        self.database_url = (runtime.environ.get(cfg.database_url_variable(self.name))
                             or cfg.default_database_url(self.name, runtime.environ))
        self.engine = db.make_engine(self.database_url)
        self.session_factory = db.make_session_factory(self.engine)
        self.relay_wakeup = threading.Event()
        self._verifier: TokenVerifier | None = None
        # what identity revoked since this process started; fed by revocation_listener()
        self.revocations = revocations.Revocations()
        self.idempotency = IdempotencyKeys(self.uow, self.messaging.idempotency)

    # --- what subclasses provide --------------------------------------------------------

    def blueprints(self) -> list[flask_smorest.Blueprint]:
        return []

    def message_handlers(self) -> dict[str, Mapping[str, Handler]]:
        """``{queue name: {message type or "#": handler}}`` for this service's queues."""
        return {}

    def background_jobs(self) -> list[BackgroundJob]:
        """Periodic work (schedulers) run beside the consumers."""
        return []

    def bootstrap_dev(self) -> None:
        """Seed development data (embedded mode); idempotent."""

    def extra_routes(self, app: Flask) -> None:
        """Routes outside ``/api/<name>`` (ca-signer's public ``/ca``)."""

    # --- provided -----------------------------------------------------------------------

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, self.messaging, self.name.replace("-", "_"),
                          after_commit=self.relay_wakeup.set)

    @property
    def verifier(self) -> TokenVerifier:
        if self._verifier is None:
            fetch = self.runtime.jwks_fetcher or http_jwks_fetcher(self.platform.jwks_url)
            self._verifier = TokenVerifier(fetch, issuer=self.platform.token_issuer,
                                           audience=self.platform.token_audience,
                                           revocations=self.revocations)
        return self._verifier

    def revocation_listener(self) -> BroadcastListener:
        """What feeds this process's deny list: identity's session-ended and user events,
        on a queue of this process's own (every HTTP worker must hear every one). The
        hosts of the HTTP app run it: ``wsgi.create_app`` in each gunicorn worker, the
        embedded process once per service."""
        return BroadcastListener(self.platform.broker_url, revocations.ROUTING_KEYS,
                                 self.revocations.apply,
                                 purpose=f"{self.name.replace('-', '_')}.revocations")

    def create_app(self) -> Flask:
        app = create_app(
            service=self.name, api_name=self.api_name, title=self.title,
            description=self.description, blueprints=self.blueprints(), verifier=self.verifier,
            trusted_proxies=self.platform.trusted_proxies,
            readiness_checks={"database": lambda: db.ping(self.engine),
                              "broker": self._ping_broker},
            max_body_bytes=self.platform.max_body_bytes, extra_routes=self.extra_routes,
        )
        app.extensions["chancery_service"] = self
        return app

    def _ping_broker(self) -> None:
        if broker.is_memory(self.platform.broker_url):
            return
        with broker.connect(self.platform.broker_url) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    def relay(self) -> OutboxRelay:
        return OutboxRelay(self.name, self.engine, self.session_factory, self.messaging,
                           self.platform.broker_url, poll_seconds=self.platform.relay_poll_seconds,
                           wakeup=self.relay_wakeup)

    def consumers(self, prefetch: int = 10) -> list[MessageConsumer]:
        return [MessageConsumer(queue, handlers, self.uow, self.platform.broker_url,
                                prefetch=prefetch, max_retries=self.platform.consumer_max_retries)
                for queue, handlers in self.message_handlers().items()]

    def migrate(self) -> None:
        migrations.upgrade(self.migrations_dir, self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def current_service() -> Any:
    """The service behind the current request (views use it to reach handlers)."""
    return current_app.extensions["chancery_service"]


def service_classes() -> dict[str, type[Service]]:
    """Every installed service, by name, from the ``chancery.services`` entry points."""
    found = {ep.name: ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {name: found[name] for name in cfg.SERVICES if name in found}


def build(name: str, runtime: Runtime | None = None) -> Service:
    classes = service_classes()
    if name not in classes:
        raise SystemExit(f"unknown or uninstalled service {name!r}; installed: {sorted(classes)}")
    return classes[name](runtime or Runtime.from_environment())
