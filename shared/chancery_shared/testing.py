"""Helpers for tests of any service: access tokens without identity, runtimes, waiters."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import MetaData, func, select

from chancery_shared import config as cfg
from chancery_shared.db import make_engine, make_session_factory
from chancery_shared.messaging.relay import OutboxRelay
from chancery_shared.messaging.tables import MessagingTables
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import Runtime

T = TypeVar("T")


class TokenFactory:
    """Signs access tokens exactly as identity does, with a key of its own."""

    def __init__(self, issuer: str = "chancery-identity", audience: str = "chancery"):
        self.key = Ed25519PrivateKey.generate()
        self.kid = uuid.uuid4().hex[:16]
        self.issuer = issuer
        self.audience = audience

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "EdDSA"})
        return {"keys": [jwk]}

    def token(self, *, role: str, account_id: str | None, user_id: str | None = None,
              name: str | None = None, email: str | None = None, unit_ids: tuple[str, ...] = (),
              lifetime: timedelta = timedelta(minutes=10), **overrides: Any) -> str:
        now = datetime.now(UTC)
        user_id = user_id or str(uuid.uuid4())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": user_id, "typ": "access",
                  "iat": now, "nbf": now, "exp": now + lifetime, "jti": uuid.uuid4().hex,
                  "email": email or f"{user_id[:8]}@example.com",
                  "name": name or f"User {user_id[:8]}",
                  "role": role, "acct": account_id, "units": list(unit_ids)}
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(self, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**kwargs)}"}


def make_runtime(var_dir: Path, tokens: TokenFactory | None = None, **env: str) -> Runtime:
    """A runtime on SQLite files in ``var_dir`` and the in-memory bus."""
    environ = {"CHANCERY_VAR_DIR": str(var_dir), "CHANCERY_BROKER_URL": "memory://", **env}
    return Runtime(environ=environ, platform=cfg.load(cfg.PlatformSettings, environ),
                   jwks_fetcher=tokens.jwks if tokens else None)


def wait_for(probe: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; never sleep blindly in tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def purge_broker(url: str = "memory://") -> None:
    """Empty every queue of the topology (the in-memory broker is one per process)."""
    from chancery_shared.messaging import broker, topology

    with broker.connect(url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        for spec in topology.QUEUES.values():
            topology.kombu_queue(spec)(channel).purge()
            topology.kombu_dead_queue(spec.name)(channel).purge()


class OutboxBus:
    """One service's outbox and inbox tables on ``database_url`` (created afresh) and a
    broker to publish to: what the messaging tests and ``make bench-relay`` run on."""

    def __init__(self, database_url: str, broker_url: str):
        self.metadata = MetaData()
        self.tables = MessagingTables(self.metadata)
        self.engine = make_engine(database_url)
        self.metadata.drop_all(self.engine)
        self.metadata.create_all(self.engine)
        self.sessions = make_session_factory(self.engine)
        self.wakeup = threading.Event()
        self.url = broker_url
        purge_broker(self.url)  # queues are durable (RabbitMQ) or process-wide (memory)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.tables, "orders", after_commit=self.wakeup.set)

    def relay(self, batch_size: int = 200,
              relay_class: type[OutboxRelay] = OutboxRelay) -> OutboxRelay:
        return relay_class(
            "orders", self.engine, self.sessions, self.tables, self.url, poll_seconds=0.01,
            batch_size=batch_size, wakeup=self.wakeup)

    def count(self, table: Any) -> int:
        with self.sessions() as session:
            return session.execute(select(func.count()).select_from(table)).scalar_one()

    def close(self) -> None:
        purge_broker(self.url)
        self.engine.dispose()

