"""The bus mechanisms: envelope validation, outbox relay, inbox, retries, dead letters."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from chancery_shared.messaging import broker, topology
from chancery_shared.messaging import envelope as envelopes
from chancery_shared.messaging import relay as relay_module
from chancery_shared.messaging.consumer import (
    MessageConsumer,
    _Pending,
    peek_dead_letters,
    replay_dead_letters,
)
from chancery_shared.messaging.envelope import Actor, Context, Envelope
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.testing import OutboxBus, wait_for
from kombu import Producer
from marshmallow import ValidationError
from sqlalchemy import func, select

CONTEXT = Context(actor=Actor(user_id="u-1", user_name="Alice Ng", ip="203.0.113.9"),
                  account_id="acct-1")


def emit_cancelled(uow: UnitOfWork, order_id: str = "o-1") -> envelopes.Envelope:
    return uow.event("orders.order.cancelled", CONTEXT, subject=("order", order_id),
                     summary=f"Alice Ng cancelled order {order_id}",
                     data={"order_id": order_id, "reason": "no longer needed"})


@contextlib.contextmanager
def running(bus, consumer: MessageConsumer) -> Iterator[None]:
    """The bus's outbox relay and ``consumer`` at work in threads while the block runs."""
    stop = threading.Event()
    threads = [threading.Thread(target=bus.relay().run, args=(stop,), daemon=True),
               threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)


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
    with running(bus, consumer):
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
    with running(bus, consumer):
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
    with running(bus, consumer):
        with bus.uow() as uow:
            emit_cancelled(uow)
            uow.commit()
        wait_for(lambda: consumer.handled == 1, message="handled once the database is back")
        assert len(attempts) == 5
        assert peek_dead_letters(bus.url, "ledger.events") == []


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


# --- batches: a consumer applying several messages in one transaction (batch_size) --------
# acknowledged only after the commit, a failing message handled alone, duplicates applied
# once, a crash before the commit redelivered and applied once, no wait for a full batch.

LEDGER = "ledger.events"
CANCELLED = "orders.order.cancelled"


def cancelled(order_id: str) -> Envelope:
    return envelopes.new_envelope(type=CANCELLED, source="orders", context=CONTEXT,
                                  subject_type="order", subject_id=order_id,
                                  summary=f"cancelled {order_id}",
                                  data={"order_id": order_id, "reason": None})


def publish(url: str, *messages: Envelope) -> None:
    """Put messages on the consumer's queue (straight to it, as a retry would)."""
    with broker.connect(url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        producer = Producer(channel)
        for env in messages:
            producer.publish(env.to_json(), exchange=topology.RETRY_EXCHANGE, routing_key=LEDGER,
                             message_id=env.event_id, delivery_mode=2,
                             content_type="application/json", content_encoding="utf-8")


def effect(env: Envelope, uow: UnitOfWork) -> None:
    """The effect of a message: an outbox row naming the order (rolled back with it)."""
    emit_cancelled(uow, "effect-" + env.subject["id"])


def effects(bus: OutboxBus) -> dict[str, int]:
    outbox = bus.tables.outbox
    with bus.sessions() as session:
        bodies = session.execute(select(outbox.c.body)).scalars().all()
    counted: dict[str, int] = {}
    for body in bodies:
        order_id = envelopes.parse(body).data["order_id"]
        if order_id.startswith("effect-"):
            key = order_id.removeprefix("effect-")
            counted[key] = counted.get(key, 0) + 1
    return counted


def left_on_queue(url: str) -> int:
    """Messages still on the queue once no consumer holds them (unacknowledged ones are
    back on it)."""
    with broker.connect(url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        queue = topology.kombu_queue(topology.QUEUES[LEDGER])(channel)
        left = 0
        while queue.get(no_ack=False) is not None:
            left += 1  # left unacknowledged: back on the queue when the connection closes
        return left


class Running:
    """A consumer on its own thread; ``crashed`` holds what killed it, if anything."""

    def __init__(self, consumer: MessageConsumer):
        self.consumer = consumer
        self.stop = threading.Event()
        self.crashed: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.consumer.run_until(self.stop)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.crashed.append(exc)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def batching(bus: OutboxBus, handler: Callable[[Envelope, UnitOfWork], None],
             uow: Callable[[], UnitOfWork] | None = None, **kwargs) -> MessageConsumer:
    return MessageConsumer(LEDGER, {CANCELLED: handler}, uow or bus.uow, bus.url, prefetch=10,
                           batch_size=10, backoff_seconds=0.001, **kwargs)


def test_batch_size_is_bounded_by_the_prefetch(bus):
    assert batching(bus, effect).batching == 10
    embedded = MessageConsumer(LEDGER, {CANCELLED: effect}, bus.uow, bus.url, prefetch=1,
                               batch_size=10)
    assert embedded.batching == 1  # the embedded mode's prefetch 1: batching is off


def test_a_failing_message_in_the_middle_of_a_batch_is_handled_alone(bus):
    poison = cancelled("poison")
    others = [cancelled(f"o-{n}") for n in range(6)]
    attempts: list[str] = []

    def handler(env: Envelope, uow: UnitOfWork) -> None:
        attempts.append(env.subject["id"])
        effect(env, uow)
        if env.event_id == poison.event_id:
            raise RuntimeError("poison")

    publish(bus.url, *others[:3], poison, *others[3:])  # queued before the consumer starts
    consumer = batching(bus, handler, max_retries=1)
    with Running(consumer):
        wait_for(lambda: consumer.handled == 6, message="the six good messages")
        dead = wait_for(lambda: peek_dead_letters(bus.url, LEDGER), message="the dead letter")
    assert "poison" in dead[0]["error"]
    assert max(consumer.batches) > 1  # the good ones shared transactions
    assert effects(bus) == {f"o-{n}": 1 for n in range(6)}  # the poison's rolled back
    # in the batch and in its savepoint (if it shared one), then alone, then its one retry:
    # the ordinary budget, unchanged
    assert attempts.count("poison") in (2, 4)
    assert bus.count(bus.tables.inbox) == 6
    assert left_on_queue(bus.url) == 0


def test_duplicates_in_a_batch_and_already_processed_ones_are_applied_once(bus):
    seen_before, twin, single = cancelled("before"), cancelled("twin"), cancelled("single")
    consumer = batching(bus, effect)
    assert consumer.handle(seen_before) is True
    publish(bus.url, twin, seen_before, twin, single, twin)
    with Running(consumer):
        wait_for(lambda: consumer.handled == 3, message="twin and single applied")
    assert left_on_queue(bus.url) == 0  # all five acknowledged
    assert effects(bus) == {"before": 1, "twin": 1, "single": 1}
    assert bus.count(bus.tables.inbox) == 3
    assert peek_dead_letters(bus.url, LEDGER) == []


class Crash(BaseException):
    """The process dying: no handler, retry or fallback catches it."""


def test_a_crash_before_the_commit_acknowledges_nothing_and_redelivery_applies_once(pg_bus):
    """On RabbitMQ: the in-memory bus does not requeue what a closed channel held (it dies
    with the process that holds it, so there is nothing to redeliver to)."""
    bus = pg_bus
    messages = [cancelled(f"o-{n}") for n in range(5)]
    applied: list[str] = []

    def recorded(env: Envelope, uow: UnitOfWork) -> None:
        effect(env, uow)
        applied.append(env.subject["id"])

    class DiesAtCommit(UnitOfWork):
        def commit(self) -> None:
            raise Crash(f"killed with {len(applied)} message(s) applied, before the commit")

    def dying() -> UnitOfWork:
        return DiesAtCommit(bus.sessions, bus.tables, "orders")

    publish(bus.url, *messages)
    first = batching(bus, recorded, dying)
    with Running(first) as running:
        wait_for(lambda: running.crashed, message="the crash")
    assert isinstance(running.crashed[0], Crash), running.crashed
    assert applied  # the handler ran (all five, when they came as one batch)
    assert first.handled == 0
    assert effects(bus) == {} and bus.count(bus.tables.inbox) == 0
    # nothing was acknowledged: all five come back to the next consumer
    second = batching(bus, effect)
    with Running(second):
        wait_for(lambda: second.handled == 5, message="the five redelivered")
    assert left_on_queue(bus.url) == 0  # all acknowledged
    assert effects(bus) == {f"o-{n}": 1 for n in range(5)}
    assert bus.count(bus.tables.inbox) == 5


def test_a_failed_batch_commit_falls_back_to_one_message_at_a_time(bus):
    messages = [cancelled(f"o-{n}") for n in range(4)]
    commits: list[int] = []

    class LosesItsFirstCommit(UnitOfWork):
        def commit(self) -> None:
            commits.append(1)
            if len(commits) <= 2:  # the batch, then the batch with savepoints
                raise RuntimeError("connection reset at commit")
            super().commit()

    def uow() -> UnitOfWork:
        return LosesItsFirstCommit(bus.sessions, bus.tables, "orders")

    consumer = batching(bus, effect, uow)
    batch = [_Pending(FakeMessage(bus), env, effect) for env in messages]
    consumer._pending = list(batch)
    consumer.flush()
    assert consumer.handled == 4
    assert all(item.message.acked_after_commit for item in batch)
    assert effects(bus) == {f"o-{n}": 1 for n in range(4)}


def test_a_batching_consumer_does_not_wait_for_a_batch_to_fill(bus):
    consumer = batching(bus, effect)
    with Running(consumer):
        wait_for(lambda: consumer.connection.connected, message="consumer connected")
        publish(bus.url, cancelled("alone"))
        wait_for(lambda: consumer.handled == 1, timeout=10, message="the lone message")
        publish(bus.url, cancelled("next"))
        wait_for(lambda: consumer.handled == 2, timeout=10, message="the next lone message")
    assert effects(bus) == {"alone": 1, "next": 1}


# --- without a broker: what is acknowledged when, and handlers that commit -------------


class FakeMessage:
    """Records whether its inbox row was already committed when it was acknowledged."""

    def __init__(self, bus: OutboxBus, envelope: Envelope | None = None):
        self.bus = bus
        self.headers: dict = {}
        self.properties: dict = {}
        self.acked_after_commit: bool | None = None

    def ack(self) -> None:
        self.acked_after_commit = self.bus.count(self.bus.tables.inbox) > 0


def test_messages_are_acknowledged_only_after_their_batch_committed(bus):
    envs = [cancelled(f"o-{n}") for n in range(3)]
    order: list[str] = []

    def handler(env: Envelope, uow: UnitOfWork) -> None:
        effect(env, uow)
        # nothing of this batch is acknowledged before its commit
        order.append(env.subject["id"])
        assert all(item.message.acked_after_commit is None for item in batch)

    consumer = batching(bus, handler)
    batch = [_Pending(FakeMessage(bus), env, handler) for env in envs]
    consumer._pending = list(batch)
    consumer.flush()
    assert order == ["o-0", "o-1", "o-2"]
    assert [item.message.acked_after_commit for item in batch] == [True, True, True]
    assert consumer.batches == [3]


def test_a_handler_that_commits_is_not_batched_but_handled_alone(bus):
    def commits_itself(env: Envelope, uow: UnitOfWork) -> None:
        effect(env, uow)
        uow.commit()  # like the signer's intent: must not commit the batch's others

    calls: list[str] = []

    def plain(env: Envelope, uow: UnitOfWork) -> None:
        calls.append(env.subject["id"])
        effect(env, uow)

    consumer = batching(bus, plain)
    envs = [cancelled("plain-1"), cancelled("committer"), cancelled("plain-2")]
    batch = [_Pending(FakeMessage(bus), envs[0], plain),
             _Pending(FakeMessage(bus), envs[1], commits_itself),
             _Pending(FakeMessage(bus), envs[2], plain)]
    consumer._pending = list(batch)
    consumer.flush()
    assert consumer.batches == [2]
    assert consumer.handled == 3
    assert effects(bus) == {"plain-1": 1, "committer": 1, "plain-2": 1}
    assert all(item.message.acked_after_commit for item in batch)


def test_the_batch_commit_wakes_the_relay(bus):
    consumer = batching(bus, effect)
    bus.wakeup.clear()
    consumer._pending = [_Pending(FakeMessage(bus), cancelled(f"o-{n}"), effect)
                         for n in range(2)]
    consumer.flush()
    assert bus.wakeup.is_set()  # the unit of work's after-commit hook ran
