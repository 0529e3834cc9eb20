"""One valid chain per log on PostgreSQL with several consumers appending at once.

SQLite serialises writers anyway; PostgreSQL is where the log row's lock earns its
keep: without it two consumers would read the same head and fork the chain.
"""

from __future__ import annotations

import threading

import pytest
from chancery_audit.model import log_key, metadata
from chancery_audit.service import AUDIT_QUEUE, AuditService
from chancery_audit.verify import verify_logs
from chancery_shared.messaging.consumer import MessageConsumer
from chancery_shared.messaging.envelope import Actor, Context, new_envelope
from chancery_shared.testing import make_runtime
from sqlalchemy import create_engine, text

ACCOUNTS = ("acct-" + "c" * 31, "acct-" + "d" * 31)
CONSUMERS, PER_CONSUMER = 4, 30


@pytest.fixture
def pg_audit(request, tmp_path):
    env = request.getfixturevalue("infrastructure")
    url = env["CHANCERY_AUDIT_DATABASE_URL"]
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def wipe():
        with engine.begin() as connection:
            metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))

    wipe()
    service = AuditService(make_runtime(tmp_path, CHANCERY_AUDIT_DATABASE_URL=url))
    service.migrate()
    yield service
    service.dispose()
    wipe()
    engine.dispose()


def message(account_id: str, n: int):
    return new_envelope(type="orders.order.approved", source="orders",
                        context=Context(actor=Actor(user_id="u-1", user_name="Ada"),
                                        account_id=account_id),
                        subject_type="order", subject_id=f"order-{n}",
                        summary=f"Ada approved order {n}",
                        data={"order_id": f"order-{n}", "price_cents": 100, "unit_id": None})


@pytest.mark.distributed
def test_concurrent_consumers_keep_one_valid_chain_per_log(pg_audit):
    consumers = [MessageConsumer(AUDIT_QUEUE, pg_audit.message_handlers()[AUDIT_QUEUE],
                                 pg_audit.uow, "memory://") for _ in range(CONSUMERS)]
    batches = [[message(ACCOUNTS[(c + i) % 2], c * 1000 + i) for i in range(PER_CONSUMER)]
               for c in range(CONSUMERS)]
    start, errors = threading.Barrier(CONSUMERS), []

    def run(consumer, batch):
        try:
            start.wait()
            for envelope in batch:
                assert consumer.handle(envelope) is True
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair)
               for pair in zip(consumers, batches, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    with pg_audit.uow() as uow:
        results = {r.log_key: r for r in verify_logs(uow.session, every=True)}
    for account in ACCOUNTS:
        result = results[log_key(account)]
        assert result.ok, result.first_bad
        assert result.entries_checked == CONSUMERS * PER_CONSUMER // 2
