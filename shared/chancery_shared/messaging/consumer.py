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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kombu import Connection, Consumer, Message, Producer
from kombu.mixins import ConsumerMixin
from marshmallow import ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from chancery_shared.messaging import broker, topology
from chancery_shared.messaging import envelope as envelopes
from chancery_shared.messaging.envelope import Envelope
from chancery_shared.messaging.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, UnitOfWork], None]
RETRY_HEADER = "x-chancery-retries"
OUTAGE_HEADER = "x-chancery-outage-retries"
ERROR_HEADER = "x-chancery-error"
OUTAGE_RETRIES = 60
OUTAGE_MAX_BACKOFF = 5.0


def is_database_outage(exc: BaseException) -> bool:
    """The database could not be reached or dropped the connection: not the message's
    fault, so it must not use up the message's retries."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


class MessageConsumer(ConsumerMixin):
    def __init__(self, queue: str, handlers: Mapping[str, Handler],
                 uow_factory: Callable[[], UnitOfWork], broker_url: str, *,
                 prefetch: int = 10, max_retries: int = 5, backoff_seconds: float = 0.05):
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
