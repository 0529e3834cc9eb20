"""The bus mechanisms: envelope validation, outbox relay, inbox, retries, dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from chancery_shared.db import make_engine, make_session_factory
from chancery_shared.messaging import envelope as envelopes
from chancery_shared.messaging import relay as relay_module
from chancery_shared.messaging.consumer import (
    MessageConsumer,
    peek_dead_letters,
    replay_dead_letters,
)
from chancery_shared.messaging.envelope import Actor, Context, Envelope
from chancery_shared.messaging.relay import OutboxRelay
from chancery_shared.messaging.tables import MessagingTables
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.testing import purge_broker, wait_for
from marshmallow import ValidationError
from sqlalchemy import MetaData, func, select

CONTEXT = Context(actor=Actor(user_id="u-1", user_name="Alice Ng", ip="203.0.113.9"),
                  account_id="acct-1")


class Bus:
    """One service's database with its outbox and inbox, and a broker to publish to."""

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

    def relay(self) -> OutboxRelay:
        return OutboxRelay("orders", self.engine, self.sessions, self.tables, self.url,
                           poll_seconds=0.01, wakeup=self.wakeup)

    def count(self, table) -> int:
        with self.sessions() as session:
            return session.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture(params=["sqlite+memory", "postgresql+rabbitmq"])
def bus(request, tmp_path) -> Iterator[Bus]:
    """The same mechanisms on the embedded parts and on the real servers."""
    if request.param == "sqlite+memory":
        b = Bus(f"sqlite:///{tmp_path / 'bus.db'}", "memory://")
    else:
        env = request.getfixturevalue("infrastructure")
        b = Bus(env["CHANCERY_ORDERS_DATABASE_URL"], env["CHANCERY_BROKER_URL"])
    yield b
    purge_broker(b.url)
    b.engine.dispose()


def emit_cancelled(uow: UnitOfWork, order_id: str = "o-1") -> envelopes.Envelope:
    return uow.event("orders.order.cancelled", CONTEXT, subject=("order", order_id),
                     summary=f"Alice Ng cancelled order {order_id}",
                     data={"order_id": order_id, "reason": "no longer needed"})


def test_envelope_round_trips_and_validates_payload():
    env = envelopes.new_envelope(type="orders.order.cancelled", source="orders", context=CONTEXT,
                                 subject_type="order", subject_id="o-1", summary="s",
                                 data={"order_id": "o-1", "reason": None})
    assert envelopes.parse(env.to_json()) == env
    assert env.actor == {"user_id": "u-1", "user_name": "Alice Ng", "ip": "203.0.113.9"}


@pytest.mark.parametrize("mutation, field", [
    ({"type": "Not A Type"}, "type"),
    ({"event_id": "nope"}, "event_id"),
    ({"data": {"reason": "missing order id"}}, "data"),
    ({"actor": {}}, "actor"),
    ({"occurred_at": "yesterday"}, "occurred_at"),
    ({"type": "orders.order.unheard_of"}, "data"),
])
def test_invalid_envelopes_are_refused_naming_the_field(mutation, field):
    env = envelopes.new_envelope(type="orders.order.cancelled", source="orders", context=CONTEXT,
                                 subject_type="order", subject_id="o-1", summary="s",
                                 data={"order_id": "o-1"})
    body = {**__import__("json").loads(env.to_json()), **mutation}
    with pytest.raises(ValidationError) as err:
        envelopes.parse(body)
    assert field in err.value.messages


def test_emitting_an_invalid_payload_fails_inside_the_transaction(bus):
    with bus.uow() as uow, pytest.raises(ValidationError):
        uow.event("orders.order.cancelled", CONTEXT, subject=("order", "o"), summary="s",
                  data={"reason": "no order id"})
    assert bus.count(bus.tables.outbox) == 0


def test_rolled_back_work_publishes_nothing(bus):
    with bus.uow() as uow:
        emit_cancelled(uow)
        # leaving without commit
    assert bus.count(bus.tables.outbox) == 0


def test_relay_publishes_committed_messages_once_and_in_order(bus):
    received: list[str] = []
    consumer = MessageConsumer("audit.all", {"#": lambda env, uow: received.append(
        env.subject["id"])}, bus.uow, bus.url)
    stop = threading.Event()
    threads = [threading.Thread(target=bus.relay().run, args=(stop,), daemon=True),
               threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    try:
        for n in range(20):
            with bus.uow() as uow:
                emit_cancelled(uow, f"o-{n}")
                uow.commit()
        wait_for(lambda: len(received) == 20, message="20 deliveries")
        assert received == [f"o-{n}" for n in range(20)]
        with bus.sessions() as session:
            unsent = session.execute(select(func.count()).select_from(bus.tables.outbox)
                                     .where(bus.tables.outbox.c.sent_at.is_(None))).scalar_one()
        assert unsent == 0
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_a_redelivered_message_has_no_second_effect(bus):
    effects: list[str] = []
    consumer = MessageConsumer("ledger.events", {
        "orders.order.cancelled": lambda env, uow: effects.append(env.event_id)}, bus.uow, bus.url)
    with bus.uow() as uow:
        env = emit_cancelled(uow)
        uow.commit()
    assert consumer.handle(env) is True
    assert consumer.handle(env) is False
    assert effects == [env.event_id]
    assert bus.count(bus.tables.inbox) == 1


def test_a_failing_handler_commits_nothing_and_leaves_no_inbox_row(bus):
    def explode(env, uow):
        emit_cancelled(uow, "side-effect")
        raise RuntimeError("boom")

    consumer = MessageConsumer("ledger.events", {"orders.order.cancelled": explode}, bus.uow,
                               bus.url)
    with bus.uow() as uow:
        env = emit_cancelled(uow)
        uow.commit()
    with pytest.raises(RuntimeError):
        consumer.handle(env)
    assert bus.count(bus.tables.inbox) == 0
    assert bus.count(bus.tables.outbox) == 1  # only the original message


def test_poison_message_is_retried_then_dead_lettered_and_can_be_replayed(bus):
    attempts: list[int] = []
    healthy = threading.Event()

    def flaky(env, uow):
        attempts.append(1)
        if not healthy.is_set():
            raise RuntimeError("downstream unavailable")

    consumer = MessageConsumer("ledger.events", {"orders.order.cancelled": flaky}, bus.uow,
                               bus.url, max_retries=2, backoff_seconds=0.001)
    stop = threading.Event()
    threads = [threading.Thread(target=bus.relay().run, args=(stop,), daemon=True),
               threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    try:
        with bus.uow() as uow:
            emit_cancelled(uow)
            uow.commit()
        wait_for(lambda: len(attempts) == 3, message="first try and two retries")
        dead = wait_for(lambda: peek_dead_letters(bus.url, "ledger.events"),
                        message="a dead letter")
        assert "downstream unavailable" in dead[0]["error"]
        assert consumer.handled == 0
        healthy.set()
        assert replay_dead_letters(bus.url, "ledger.events") == 1
        wait_for(lambda: consumer.handled == 1, message="the replayed message handled")
        assert peek_dead_letters(bus.url, "ledger.events") == []
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_a_database_outage_does_not_use_up_the_retries(bus):
    """A message whose handler lost the database (PostgreSQL restarting) is retried past
    the ordinary budget instead of being dead-lettered: the message is not poison."""
    from sqlalchemy.exc import OperationalError

    attempts: list[int] = []

    def database_restarting(env, uow):
        attempts.append(1)
        if len(attempts) <= 4:
            raise OperationalError("SELECT 1", {}, Exception("the database system is "
                                                            "shutting down"))

    consumer = MessageConsumer("ledger.events", {"orders.order.cancelled": database_restarting},
                               bus.uow, bus.url, max_retries=1, backoff_seconds=0.001)
    stop = threading.Event()
    threads = [threading.Thread(target=bus.relay().run, args=(stop,), daemon=True),
               threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    try:
        with bus.uow() as uow:
            emit_cancelled(uow)
            uow.commit()
        wait_for(lambda: consumer.handled == 1, message="handled once the database is back")
        assert len(attempts) == 5
        assert peek_dead_letters(bus.url, "ledger.events") == []
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_invalid_message_goes_straight_to_dead_letters(bus):
    from chancery_shared.messaging import broker, topology
    from kombu import Producer

    consumer = MessageConsumer("audit.all", {"#": lambda env, uow: None}, bus.uow, bus.url)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: consumer.connection.connected, message="consumer connected")
        with broker.connect(bus.url) as connection:
            channel = connection.channel()
            topology.declare(channel)
            Producer(channel).publish('{"not": "an envelope"}', exchange=topology.EVENTS_EXCHANGE,
                                      routing_key="orders.order.cancelled",
                                      content_type="application/json", content_encoding="utf-8")
        dead = wait_for(lambda: peek_dead_letters(bus.url, "audit.all"), message="dead letter")
        assert dead[0]["error"].startswith("invalid message")
    finally:
        stop.set()
        thread.join(5)


# --- on PostgreSQL: commits wake the relay (LISTEN/NOTIFY, from make bench, which replaced
# 50 ms polling: docs/performance.md), and twin deliveries handled at the same moment
# have one effect (the second waits on the inbox row, then gives way).


@pytest.fixture
def pg_bus(infrastructure) -> Iterator[Bus]:
    bus = Bus(infrastructure["CHANCERY_ORDERS_DATABASE_URL"],
              infrastructure["CHANCERY_BROKER_URL"])
    yield bus
    purge_broker(bus.url)
    bus.engine.dispose()


def test_a_commit_wakes_the_listening_relay(pg_bus, monkeypatch):
    # Without the notification the relay would look again only after 120 s, past the wait.
    monkeypatch.setattr(relay_module, "IDLE_POLL_SECONDS", 120.0)
    received: list[str] = []
    consumer = MessageConsumer("audit.all", {"#": lambda env, uow: received.append(
        env.subject["id"])}, pg_bus.uow, pg_bus.url)
    relay = relay_module.OutboxRelay("orders", pg_bus.engine, pg_bus.sessions,
                                     pg_bus.tables, pg_bus.url)  # no in-process wakeup
    stop = threading.Event()
    threads = [threading.Thread(target=relay.run, args=(stop,), daemon=True),
               threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        with pg_bus.uow() as uow:
            emit_cancelled(uow, "o-first")
            uow.commit()
        wait_for(lambda: received == ["o-first"], timeout=60, message="the first delivery")
        # the relay is now idle in its wait: only the notification can bring it back
        with pg_bus.uow() as uow:
            emit_cancelled(uow, "o-second")
            uow.commit()
        wait_for(lambda: received == ["o-first", "o-second"], timeout=60,
                 message="the second delivery, woken by NOTIFY")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)


def test_a_rolled_back_emit_sends_no_notification(pg_bus):
    import psycopg

    url = pg_bus.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {relay_module.OUTBOX_CHANNEL}")
        with pg_bus.uow() as uow:
            emit_cancelled(uow, "o-rolled-back")
            uow.rollback()
        assert list(listener.notifies(timeout=1.0, stop_after=1)) == []
        with pg_bus.uow() as uow:
            emit_cancelled(uow, "o-committed")
            uow.commit()
        assert len(list(listener.notifies(timeout=30.0, stop_after=1))) == 1


def test_twin_deliveries_handled_at_once_have_one_effect(pg_bus):
    inside = threading.Event()

    def slow_effect(envelope: Envelope, uow: UnitOfWork) -> None:
        emit_cancelled(uow, "o-effect")  # the effect: a row in the same transaction
        inside.set()
        time.sleep(1.0)  # the twin arrives meanwhile and must wait for this commit

    consumer = MessageConsumer("ledger.events", {"orders.order.cancelled": slow_effect},
                               pg_bus.uow, pg_bus.url)
    with pg_bus.uow() as uow:
        envelope = emit_cancelled(uow, "o-twin")
        uow.commit()
    results: list[bool] = []
    first = threading.Thread(target=lambda: results.append(consumer.handle(envelope)))
    first.start()
    assert inside.wait(30)
    results.append(consumer.handle(envelope))  # the twin, while the first is inside
    first.join(30)
    assert sorted(results) == [False, True]
    with pg_bus.sessions() as session:
        effects = session.execute(select(func.count()).select_from(pg_bus.tables.outbox)
                                  .where(pg_bus.tables.outbox.c.body.contains("o-effect"))
                                  ).scalar_one()
    assert effects == 1
    assert pg_bus.count(pg_bus.tables.inbox) == 1
