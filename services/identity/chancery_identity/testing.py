"""Helpers for tests that need a real identity: a movable clock, sign-in, the outbox.

identity's own tests use them, and so may cross-service tests (the authorization
matrix) that want real users, sessions and tokens rather than forged ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chancery_shared.messaging.envelope import utcnow
from chancery_shared.testing import make_runtime
from sqlalchemy import select

from chancery_identity.service import IdentityService

API = "/api/identity/v1"
TEST_PASSWORD = "quiet-lantern-harbour"  # passes the policy; the seeded users' password


class Clock:
    """identity's "now", moved by tests instead of sleeping (``service.clock = Clock()``)."""

    def __init__(self, now: datetime | None = None):
        self.now = now or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def build_test_service(var_dir: Path, **env: str) -> IdentityService:
    """identity on SQLite in ``var_dir``: cheap hashing, a movable clock, migrated and seeded."""
    environ = {"CHANCERY_DEV_PASSWORD": TEST_PASSWORD, "CHANCERY_PASSWORD_HASH_PROFILE": "fast",
               **env}
    service = IdentityService(make_runtime(var_dir, **environ))
    service.clock = Clock()
    # identity verifies its own tokens through its own JWKS document
    service.runtime.jwks_fetcher = lambda: jwks_of(service)
    service.migrate()
    service.bootstrap_dev()
    return service


def jwks_of(service: IdentityService) -> dict[str, Any]:
    with service.uow() as uow:
        return service.tokens.jwks(uow.session, service.clock())


def sign_in(client: Any, email: str, password: str = TEST_PASSWORD,
            ip: str = "192.0.2.10") -> Any:
    return client.post(f"{API}/sessions", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": ip})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def outbox(service: IdentityService, type_: str | None = None) -> list[dict[str, Any]]:
    """The messages identity wrote, as envelopes (dicts), oldest first."""
    table = service.messaging.outbox
    with service.uow() as uow:
        rows = uow.session.execute(select(table.c.type, table.c.body)
                                   .order_by(table.c.seq)).all()
    return [json.loads(body) for t, body in rows if type_ is None or t == type_]
