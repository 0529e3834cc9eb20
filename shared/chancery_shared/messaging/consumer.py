"""Consumers: handle each message once, acknowledge after commit, dead-letter poison.

A handler receives the validated envelope and an open unit of work. The consumer
records the message id in the inbox in the same transaction, commits, and only then
acknowledges. A failing message is retried a bounded number of times (republished to
its own queue with a retry count), then moved to ``<queue>.dead`` with the error, where
an operator can inspect and replay it (``chancery dead-letters``).

A lost database is an outage, not a poison message: while the service's database is
unreachable (restarting, failing over) a message is retried on a separate, longer
budget (OUTAGE_RETRIES, backing off to OUTAGE_MAX_BACKOFF, about five minutes) instead
of being dead-lettered after the second or so the ordinary budget lasts. The fault runs
(tests/chaos) found signing commands dead-lettered, and their orders stuck in
``issuing``, by a PostgreSQL restart of a few seconds.

Batching (opt-in, ``batch_size`` > 1): the messages already delivered are applied in one
transaction instead of one each (a consumer transaction's round trips and commit are most
of what a message costs: docs/performance.md). The guarantees stay those of one message:

- the batch is applied in one transaction with its inbox rows and committed once; only
  then are its messages acknowledged, so a crash before the commit leaves all of them
  unacknowledged, to be redelivered and applied once (the inbox);
- if a handler fails, the batch is rolled back and applied again with a SAVEPOINT per
  message: the failing one is rolled back alone and, after the others committed, goes
  through the one-message path (``handle``, with the same retry, outage and dead-letter
  budgets), so it neither blocks nor poisons them. (Savepoints only then: they cost two
  round trips a message, about what batching saves.)
- if that transaction fails too (a twin delivery committed an inbox row first), or the
  database is gone, every message of the batch is handled one by one;
- a message seen twice in a batch, or already in the inbox, is applied once;
- a batch is applied when it is full or as soon as no further message is immediately
  available (``BATCH_WAIT_SECONDS``): nothing waits for a batch to fill;
- a handler that commits inside (the signer commits its intent before the CA key signs)
  must not be batched: under batching, ``uow.commit`` inside a handler raises
  ``CommitInsideBatch``, which sends that message down the one-message path.

The broker never delivers more unacknowledged messages than the prefetch, so a batch is
at most ``min(batch_size, prefetch)``: with prefetch 1 (the embedded mode) batching is off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from itertools import count
from typing import Any, NamedTuple

from kombu import Connection, Consumer, Message, Producer
from kombu.mixins import ConsumerMixin
from marshmallow import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from chancery_shared.messaging import broker, topology
from chancery_shared.messaging import envelope as envelopes
from chancery_shared.messaging.envelope import Envelope, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, UnitOfWork], None]
RETRY_HEADER = "x-chancery-retries"
OUTAGE_HEADER = "x-chancery-outage-retries"
ERROR_HEADER = "x-chancery-error"
OUTAGE_RETRIES = 60
OUTAGE_MAX_BACKOFF = 5.0
#: How long a batching consumer waits for a further message before applying what it
#: holds: "immediately available" means already in the socket or arriving within this.
BATCH_WAIT_SECONDS = 0.002


class CommitInsideBatch(RuntimeError):
    """A handler committed inside a batch; such handlers take the one-message path."""


class _Pending(NamedTuple):
    message: Message
    envelope: Envelope
    handler: Handler


def is_database_outage(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection: not the message's
    fault, so it must not use up the message's retries."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


class MessageConsumer(ConsumerMixin):
    def __init__(self, queue: str, handlers: Mapping[str, Handler],
                 uow_factory: Callable[[], UnitOfWork], broker_url: str, *,
                 prefetch: int = 10, max_retries: int = 5, backoff_seconds: float = 0.05,
                 batch_size: int = 1):
        if queue not in topology.QUEUES:
            raise ValueError(f"unknown queue {queue}; add it to chancery_shared.messaging.topology")
        self.queue = queue
        self.handlers = dict(handlers)
        self._uow_factory = uow_factory
        self._broker_url = broker_url
        self._prefetch = prefetch
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self.connection: Connection = broker.connect(broker_url)
        self._producer: Producer | None = None
        self.handled = 0  # messages whose effect committed (for health and tests)
        self.batch_size = batch_size
        self.batches: list[int] = []  # sizes of the batches committed (tests, the last 100)
        self._pending: list[_Pending] = []

    @property
    def batching(self) -> int:
        """The largest batch this consumer applies; 1 means one message per transaction.
        Never more than the prefetch: the broker would not deliver the rest of a batch
        before some of it is acknowledged."""
        return max(1, min(self.batch_size, self._prefetch))

    # kombu's mixin ----------------------------------------------------------------------

    def get_consumers(self, consumer_cls: type[Consumer], channel: Any) -> list[Consumer]:
        topology.declare(channel)
        self._producer = Producer(self.connection.channel())
        spec = topology.QUEUES[self.queue]
        return [consumer_cls(queues=[topology.kombu_queue(spec)], on_message=self.on_message,
                             prefetch_count=self._prefetch, accept=["application/json"])]

    def on_message(self, message: Message) -> None:
        try:
            envelope = envelopes.parse(message.body)
        except (ValidationError, ValueError) as exc:
            self._dead_letter(message, f"invalid message: {exc}")
            return
        handler = self.handlers.get(envelope.type) or self.handlers.get("#")
        if handler is None:  # bound but unhandled: a wiring mistake an operator must see
            self._dead_letter(message, f"no handler for {envelope.type} on {self.queue}")
            return
        if self.batching > 1:
            self._pending.append(_Pending(message, envelope, handler))
            if len(self._pending) >= self.batching:
                self.flush()
            return
        self._handle_one(message, envelope, handler)

    def _handle_one(self, message: Message, envelope: Envelope, handler: Handler) -> None:
        """The one-message path: apply, then acknowledge; or retry / dead-letter."""
        try:
            self.handle(envelope, handler)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
            log.exception("%s: handling %s %s failed", self.queue, envelope.type,
                          envelope.event_id)
            self._retry_or_dead_letter(message, f"{type(exc).__name__}: {exc}",
                                       outage=is_database_outage(exc))
            return
        message.ack()

    # the part tests drive directly -------------------------------------------------------

    def handle(self, envelope: Envelope, handler: Handler | None = None) -> bool:
        """Apply ``envelope`` once; returns False when it had already been applied."""
        handler = handler or self.handlers.get(envelope.type) or self.handlers["#"]
        with self._uow_factory() as uow:
            if uow.already_processed(self.queue, envelope.event_id):
                return False
            handler(envelope, uow)
            try:
                uow.mark_processed(self.queue, envelope.event_id)
                uow.commit()
            except IntegrityError:
                # A twin delivery committed first: that is the one effect we wanted. On
                # PostgreSQL the inbox insert itself fails (it waited for the twin's commit).
                with self._uow_factory() as check:
                    if check.already_processed(self.queue, envelope.event_id):
                        return False
                raise
        self.handled += 1
        return True

    # batches ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Apply the messages held, in one transaction; acknowledge them after its commit."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        if len(batch) == 1:
            self._handle_one(*batch[0])
            return
        try:
            done, failed = self.apply_batch(batch)
        except Exception as exc:  # noqa: BLE001 - some message failed: isolate it
            done, failed = self._apply_isolating(batch, exc)
        for message in done:
            message.ack()
        for item in failed:
            self._handle_one(*item)

    def _apply_isolating(self, batch: list[_Pending], cause: Exception,
                         ) -> tuple[list[Message], list[_Pending]]:
        """After a failed batch: again with a savepoint per message, so a failing one is
        rolled back alone; if that fails too (the commit, the database), one by one."""
        if not is_database_outage(cause):
            try:
                return self.apply_batch(batch, savepoints=True)
            except Exception as exc:  # noqa: BLE001 - reported, then one by one
                cause = exc
        log.warning("%s: a batch of %d failed (%s: %s); handling its messages one by one",
                    self.queue, len(batch), type(cause).__name__, cause)
        return [], batch

    def apply_batch(self, batch: list[_Pending], *, savepoints: bool = False,
                    ) -> tuple[list[Message], list[_Pending]]:
        """Apply ``batch`` in one transaction with the inbox rows; commit.

        Returns the messages to acknowledge (their effect, or an earlier one, committed)
        and, with ``savepoints``, the ones whose handler failed (each rolled back to its
        own savepoint; for the one-message path). Without savepoints (two round trips
        fewer per message) any failure raises. Raises when the transaction itself fails:
        nothing of it committed, nothing to acknowledge.
        """
        done: list[Message] = []
        failed: list[_Pending] = []
        applied: list[str] = []
        with self._uow_factory() as uow:
            seen = self._already_processed(uow, [item.envelope.event_id for item in batch])
            for item in batch:
                event_id = item.envelope.event_id
                if event_id in seen:
                    done.append(item.message)  # a duplicate: the one effect commits here
                    continue
                emitted = len(uow.emitted)
                uow.commit = _refuse_commit  # type: ignore[method-assign]
                try:
                    if savepoints:
                        with uow.session.begin_nested():
                            item.handler(item.envelope, uow)
                    else:
                        item.handler(item.envelope, uow)
                except Exception as exc:
                    if not savepoints or is_database_outage(exc):
                        raise  # the transaction is gone or must go: isolate, or one by one
                    log.info("%s: %s %s failed in a batch (%s); handling it alone",
                             self.queue, item.envelope.type, event_id, exc)
                    del uow.emitted[emitted:]
                    failed.append(item)
                    continue
                finally:
                    del uow.commit  # the class's commit again
                seen.add(event_id)
                applied.append(event_id)
                done.append(item.message)
            if applied:
                now = utcnow()
                uow.session.execute(insert(uow._tables.inbox), [
                    {"consumer": self.queue, "event_id": event_id, "processed_at": now}
                    for event_id in applied])
            uow.commit()
        self.handled += len(applied)
        self.batches = [*self.batches[-99:], len(applied)]
        return done, failed

    def _already_processed(self, uow: UnitOfWork, event_ids: list[str]) -> set[str]:
        """Which of ``event_ids`` this queue's inbox holds (one query for a batch)."""
        inbox = uow._tables.inbox  # the unit of work's messaging tables (same package)
        return set(uow.session.execute(
            select(inbox.c.event_id).where(inbox.c.consumer == self.queue,
                                           inbox.c.event_id.in_(set(event_ids)))
        ).scalars())

    # kombu's loop, with batches: flush when no further message is immediately available

    def consume(self, limit: int | None = None, timeout: float | None = None,
                safety_interval: float = 1, **kwargs: Any) -> Iterator[None]:
        if self.batching <= 1:
            yield from super().consume(limit=limit, timeout=timeout,
                                       safety_interval=safety_interval, **kwargs)
            return
        elapsed = 0.0
        try:
            with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
                for _ in limit and range(limit) or count():
                    if self.should_stop:
                        self.flush()
                        break
                    self.on_iteration()
                    waiting = bool(self._pending)
                    try:
                        conn.drain_events(timeout=BATCH_WAIT_SECONDS if waiting
                                          else safety_interval)
                    except TimeoutError:  # socket.timeout: nothing arrived in time
                        if waiting:
                            self.flush()
                        conn.heartbeat_check()  # rate-limited by the transport
                        if waiting:
                            continue
                        elapsed += safety_interval
                        if timeout and elapsed >= timeout:
                            raise
                    except OSError:
                        if not self.should_stop:
                            raise
                    else:
                        yield
                        elapsed = 0.0
        finally:
            # Left unapplied after a lost connection or a crash: unacknowledged, so the
            # broker redelivers them.
            self._pending = []

    # failure paths ------------------------------------------------------------------

    def _retry_or_dead_letter(self, message: Message, error: str, outage: bool = False) -> None:
        header, budget, cap = ((OUTAGE_HEADER, OUTAGE_RETRIES, OUTAGE_MAX_BACKOFF) if outage
                               else (RETRY_HEADER, self._max_retries, 2.0))
        retries = int((message.headers or {}).get(header, 0))
        if retries >= budget:
            self._dead_letter(message, error)
            return
        time.sleep(min(self._backoff * (2 ** retries), cap))
        self._republish(message, topology.RETRY_EXCHANGE,
                        {header: retries + 1, ERROR_HEADER: error[:500]})
        message.ack()

    def _dead_letter(self, message: Message, error: str) -> None:
        log.error("%s: dead-lettering message %s: %s", self.queue,
                  message.properties.get("message_id"), error)
        self._republish(message, topology.DEAD_EXCHANGE, {ERROR_HEADER: error[:500]})
        message.ack()

    def _republish(self, message: Message, exchange: Any, headers: dict[str, Any]) -> None:
        assert self._producer is not None
        merged = dict(message.headers or {})
        merged.update(headers)
        self._producer.publish(
            message.body, exchange=exchange, routing_key=self.queue, headers=merged,
            message_id=message.properties.get("message_id"), delivery_mode=2,
            content_type="application/json", content_encoding="utf-8",
            declare=[exchange],
        )

    # running ----------------------------------------------------------------------------

    def run_until(self, stop: threading.Event) -> None:
        watcher = threading.Thread(target=self._watch_stop, args=(stop,), daemon=True)
        watcher.start()
        self.run()

    def _watch_stop(self, stop: threading.Event) -> None:
        stop.wait()
        self.should_stop = True


def _refuse_commit() -> None:
    raise CommitInsideBatch("the handler commits inside its unit of work; it cannot be "
                            "batched (it is handled alone)")


def replay_dead_letters(broker_url: str, queue: str, limit: int | None = None) -> int:
    """Move messages from ``<queue>.dead`` back to ``queue`` with a fresh retry count."""
    moved = 0
    with broker.connect(broker_url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        producer = Producer(channel)
        dead = topology.kombu_dead_queue(queue)(channel)
        while limit is None or moved < limit:
            message = dead.get(no_ack=False, accept=["application/json"])
            if message is None:
                break
            headers = {k: v for k, v in (message.headers or {}).items()
                       if k not in (RETRY_HEADER, OUTAGE_HEADER, ERROR_HEADER)}
            producer.publish(message.body, exchange=topology.RETRY_EXCHANGE, routing_key=queue,
                             headers=headers, message_id=message.properties.get("message_id"),
                             delivery_mode=2, content_type="application/json",
                             content_encoding="utf-8")
            message.ack()
            moved += 1
    return moved


def peek_dead_letters(broker_url: str, queue: str, limit: int = 50) -> list[dict[str, Any]]:
    """Read dead letters without removing them (requeued after reading)."""
    seen: list[dict[str, Any]] = []
    with broker.connect(broker_url) as connection:
        channel = connection.channel()
        topology.declare(channel)
        dead = topology.kombu_dead_queue(queue)(channel)
        messages = []
        while len(messages) < limit:
            message = dead.get(no_ack=False, accept=["application/json"])
            if message is None:
                break
            messages.append(message)
            seen.append({"message_id": message.properties.get("message_id"),
                         "error": (message.headers or {}).get(ERROR_HEADER),
                         "body": message.body.decode("utf-8", "replace")
                         if isinstance(message.body, bytes) else message.body})
        for message in messages:
            message.requeue()
    return seen
