"""Fixtures: the audit service on a real SQLite file, its consumer, tokens, a recorder."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chancery_audit.service import AUDIT_QUEUE, AuditService
from chancery_shared.messaging.consumer import MessageConsumer
from chancery_shared.messaging.envelope import Actor, Context, Envelope, isoformat, new_envelope
from chancery_shared.testing import TokenFactory, make_runtime

ACCOUNT = "acct-" + "a" * 31
OTHER_ACCOUNT = "acct-" + "b" * 31
ALICE = "user-alice"


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory) -> Path:
    """The database file, migrated once; each test starts from a copy of it."""
    service = AuditService(make_runtime(tmp_path_factory.mktemp("audit-migrated")))
    service.migrate()
    service.dispose()  # the last connection closing folds the WAL into the file
    return Path(service.database_url.split("///", 1)[1])


@pytest.fixture
def sqlite_audit(tmp_path, tokens, migrated_database) -> Iterator[AuditService]:
    """The audit service on its own migrated SQLite file."""
    shutil.copyfile(migrated_database, tmp_path / migrated_database.name)
    service = AuditService(make_runtime(tmp_path, tokens))
    yield service
    service.dispose()


@pytest.fixture
def audit(sqlite_audit) -> AuditService:
    """The service under test: on SQLite, unless a module overrides this (for instance
    with ``audit_on_each_database``)."""
    return sqlite_audit


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.distributed)])
def audit_on_each_database(request) -> AuditService:
    """The service on SQLite, then on PostgreSQL, whose queries differ (trigram and
    array indexes, index-only walks): a module that wants both overrides ``audit`` with
    this."""
    return request.getfixturevalue({"sqlite": "sqlite_audit", "postgresql": "pg_audit"}[
        request.param])


@pytest.fixture(scope="session")
def pg_audit_url(request) -> Iterator[str]:
    """The audit database of the test stack's PostgreSQL, emptied of every table (so the
    first test migrates it from nothing) and dropped again at the end."""
    from chancery_audit.model import metadata
    from sqlalchemy import create_engine, text

    url = request.getfixturevalue("infrastructure")["CHANCERY_AUDIT_DATABASE_URL"]
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def wipe() -> None:
        with engine.begin() as connection:
            metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))

    wipe()
    yield url
    wipe()
    engine.dispose()


@pytest.fixture
def pg_audit(pg_audit_url, tmp_path, tokens) -> Iterator[AuditService]:
    """The audit service on PostgreSQL, migrated, every table empty."""
    from chancery_audit.model import metadata
    from sqlalchemy import text

    service = AuditService(make_runtime(tmp_path, tokens, CHANCERY_AUDIT_DATABASE_URL=pg_audit_url))
    service.migrate()  # from nothing the first time, then a no-op
    with service.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(metadata.tables)} CASCADE"))
    yield service
    service.dispose()


@pytest.fixture
def client(audit):
    return audit.create_app().test_client()


@pytest.fixture
def consumer(audit) -> MessageConsumer:
    return MessageConsumer(AUDIT_QUEUE, audit.message_handlers()[AUDIT_QUEUE], audit.uow,
                           "memory://")


Record = Callable[..., Envelope]


@pytest.fixture
def record(consumer) -> Record:
    """Put one message through the audit consumer, as the bus would deliver it."""

    def record(type_: str = "orders.order.approved", *, data: dict[str, Any] | None = None,
               account_id: str | None = ACCOUNT, user: tuple[str, str] | None = (ALICE, "Alice Ng"),
               system: str | None = None, ip: str | None = "203.0.113.7",
               subject: tuple[str, str] | None = None, summary: str | None = None,
               correlation_id: str | None = None, at: datetime | None = None,
               source: str | None = None) -> Envelope:
        if data is None:
            data = {"order_id": str(uuid.uuid4()), "price_cents": 1000, "unit_id": None}
        actor = Actor.service(system) if system else Actor(user_id=user[0], user_name=user[1],
                                                           ip=ip)
        subject = subject or ("order", data.get("order_id") or str(uuid.uuid4()))
        envelope = new_envelope(
            type=type_, source=source or type_.split(".")[0],
            context=Context(actor=actor, account_id=account_id), subject_type=subject[0],
            subject_id=subject[1], summary=summary or f"{actor.user_name or system} did {type_}",
            data=data, correlation_id=correlation_id)
        if at is not None:
            envelope = dataclasses.replace(envelope, occurred_at=isoformat(at))
        assert consumer.handle(envelope) is True
        return envelope

    return record


@pytest.fixture
def as_role(tokens) -> Callable[..., dict[str, str]]:
    """Authorization headers for a caller of ``role`` (in ``ACCOUNT`` unless told)."""

    def headers(role: str, account_id: str | None = ACCOUNT,
                unit_ids: tuple[str, ...] = ()) -> dict[str, str]:
        if role == "operator":
            account_id = None
        return tokens.headers(role=role, account_id=account_id, unit_ids=unit_ids)

    return headers
