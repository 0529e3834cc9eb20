"""The embedded mode: every service in one process, SQLite files, the in-memory bus.

Each service keeps its own database file and talks to the others only through the bus
and the gateway, as when distributed; relays, consumers and scheduled jobs run as
threads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from werkzeug.serving import make_server
from werkzeug.test import Client

from chancery_shared import config as cfg
from chancery_shared.gateway import Gateway
from chancery_shared.service import Runtime, Service, service_classes

log = logging.getLogger(__name__)


def embedded_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    env.setdefault("CHANCERY_BROKER_URL", "memory://")
    env.setdefault("CHANCERY_DEV_BOOTSTRAP", "true")
    return env


class EmbeddedChancery:
    def __init__(self, environ: Mapping[str, str] | None = None):
        env = embedded_environment(environ)
        self.runtime = Runtime(environ=env, platform=cfg.load(cfg.PlatformSettings, env),
                               jwks_fetcher=self._fetch_jwks)
        self.services: dict[str, Service] = {
            name: cls(self.runtime) for name, cls in service_classes().items()}
        self.apps = {svc.api_name: svc.create_app() for svc in self.services.values()}
        self.gateway = Gateway(self.apps, extra_prefixes={"/ca/": "ca",
                                                        "/api/docs": "identity"})
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None

    def _fetch_jwks(self) -> dict[str, Any]:
        """identity's JWKS through the gateway, as every other host fetches it over HTTP.

        The call runs on its own thread: a token is verified inside a request, and a
        request nested on the same thread would share (and clobber) Flask's ``g`` of the
        request being served when both are identity's.
        """
        result: dict[str, Any] = {}

        def fetch() -> None:
            result["jwks"] = Client(self.gateway).get("/api/identity/.well-known/jwks.json").json

        thread = threading.Thread(target=fetch, name="jwks-fetch")
        thread.start()
        thread.join(timeout=10)
        if "jwks" not in result:
            raise RuntimeError("identity's JWKS could not be fetched")
        return result["jwks"]

    def start(self) -> None:
        """Migrate, seed development data, and start relays, consumers and jobs."""
        for service in self.services.values():
            service.migrate()
        if self.runtime.platform.dev_bootstrap:
            for service in self.services.values():
                service.bootstrap_dev()
        for service in self.services.values():
            self._spawn(f"{service.name}-relay", service.relay().run, self._stop)
            self._spawn(f"{service.name}-revocations",
                        service.revocation_listener().run_until, self._stop)
            for consumer in service.consumers(prefetch=1):
                self._spawn(f"{service.name}-{consumer.queue}", consumer.run_until, self._stop)
            for number, job in enumerate(service.background_jobs()):
                self._spawn(f"{service.name}-job-{number}", job, self._stop)

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def serve(self, host: str = "127.0.0.1", port: int = 8080) -> None:
        self._server = make_server(host, port, self.gateway, threaded=True)
        self._server.serve_forever()

    def serve_in_background(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = make_server(host, port, self.gateway, threaded=True)
        self._spawn("gateway", self._server.serve_forever)
        return f"http://{host}:{self._server.server_port}"

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)
        for service in self.services.values():
            service.dispose()
