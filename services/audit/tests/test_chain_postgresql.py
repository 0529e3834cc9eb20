"""One valid chain per log on PostgreSQL with several consumers appending at once.

SQLite serialises writers anyway; PostgreSQL is where the log row's lock earns its
keep: without it two consumers would read the same head and fork the chain.
"""

from __future__ import annotations

import threading

import pytest
from chancery_audit.model import log_key
from chancery_audit.service import AUDIT_QUEUE
from chancery_audit.verify import verify_logs
from chancery_shared.messaging.consumer import MessageConsumer
from chancery_shared.messaging.envelope import Actor, Context, new_envelope

ACCOUNTS = ("acct-" + "c" * 31, "acct-" + "d" * 31)
CONSUMERS, PER_CONSUMER = 4, 30


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


class _Delivered:
    """A delivered message as the consumer holds it in a batch (no broker needed)."""

    headers: dict = {}
    properties: dict = {}

    def __init__(self) -> None:
        self.acked = False

    def ack(self) -> None:
        self.acked = True


@pytest.mark.distributed
def test_batching_consumers_keep_one_valid_chain_with_a_rolled_back_entry_inside(pg_audit):
    """Batches of ten (as the audit service runs), two consumers at once on the same two
    logs, duplicates inside a batch, and an entry whose handler fails after appending to
    the chain: its savepoint is rolled back (and the log's head with it), it is recorded
    alone afterwards, and every chain still verifies."""
    from chancery_audit.service import AUDIT_BATCH
    from chancery_shared.messaging.consumer import _Pending

    record = pg_audit.message_handlers()[AUDIT_QUEUE]["#"]
    flaky = "order-7"  # fails once, inside its batch
    failures: list[str] = []

    def handler(envelope, uow):
        record(envelope, uow)
        if envelope.subject["id"] == flaky and not failures:
            failures.append(envelope.subject["id"])
            raise RuntimeError("after appending to the chain")

    consumers = []
    for _ in range(2):
        consumer = MessageConsumer(AUDIT_QUEUE, {"#": handler}, pg_audit.uow, "memory://",
                                   prefetch=10)
        consumer.batch_size = AUDIT_BATCH
        consumers.append(consumer)
    per_consumer = [[message(ACCOUNTS[i % 2], c * 1000 + i) for i in range(40)]
                    for c in range(2)]
    start, errors, acked = threading.Barrier(2), [], []

    def run(consumer, envelopes):
        try:
            start.wait()
            for first in range(0, len(envelopes), AUDIT_BATCH):
                chunk = envelopes[first:first + AUDIT_BATCH]
                batch = [_Pending(_Delivered(), envelope, handler)
                         for envelope in [*chunk, chunk[0]]]  # a twin in every batch
                consumer._pending = list(batch)
                consumer.flush()
                acked.extend(item.message.acked for item in batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair)
               for pair in zip(consumers, per_consumer, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert failures == [flaky]
    assert all(acked) and len(acked) == 2 * (40 + 4)
    assert sum(c.handled for c in consumers) == 80
    assert any(size > 1 for c in consumers for size in c.batches)

    with pg_audit.uow() as uow:
        results = {r.log_key: r for r in verify_logs(uow.session, every=True)}
    for account in ACCOUNTS:
        result = results[log_key(account)]
        assert result.ok, result.first_bad
        assert result.entries_checked == 40
