"""The outbox relay: publishes committed messages with publisher confirms, in order.

On PostgreSQL a transaction that writes to the outbox also sends ``NOTIFY`` on
:data:`OUTBOX_CHANNEL` (delivered at commit, never for a rollback), and the relay
``LISTEN``s on a connection of its own: it wakes as soon as there is something to
publish, and otherwise looks only every :data:`IDLE_POLL_SECONDS` (the safety net for a
notification lost with a dropped connection). Polling every 50 ms instead cost each idle
relay about 5 % of a CPU and a PostgreSQL transaction per poll; ``make bench`` measured
it (docs/performance.md). Elsewhere (SQLite, embedded) the relay polls every
``poll_seconds`` or is woken in-process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kombu import Connection, Producer
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from chancery_shared.messaging import broker, topology
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.tables import MessagingTables

log = logging.getLogger(__name__)

#: The PostgreSQL notification channel an outbox write announces itself on (per database).
OUTBOX_CHANNEL = "chancery_outbox"
#: How often a listening relay looks at its outbox when nothing announced a message.
IDLE_POLL_SECONDS = 1.0


#: Longest the relay waits for the broker's confirms of one batch; past it the rows not
#: confirmed stay unsent and the relay reconnects.
CONFIRM_TIMEOUT_SECONDS = 30.0


class UnconfirmedPublish(Exception):
    """The broker's confirms of a batch did not all come (timeout): reconnect."""


class ConfirmedPublisher:
    """Publishes a batch of outbox rows, then waits once for the broker's confirms.

    On RabbitMQ the channel is in confirm mode (``confirm.select``) without kombu's wait
    after every publish (``broker.connect(confirm_each_publish=False)``): the broker
    numbers the messages of the channel 1, 2, 3... and answers ``basic.ack`` (or
    ``basic.nack``) for each, or for all up to one (``multiple``), in any order. In memory
    a publish is done when it returns: there is nothing to wait for.
    """

    def __init__(self, connection: Connection, confirms: bool):
        self.connection = connection
        channel = connection.channel()
        topology.declare(channel)
        self.producer = Producer(channel)
        self._confirms = confirms
        self._last_tag = 0  # the delivery tag of the channel's latest publish
        self._unsettled: set[int] = set()
        self._acked: set[int] = set()
        if confirms:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)

    def _settle(self, tag: int, multiple: bool) -> set[int]:
        settled = {t for t in self._unsettled if t <= tag} if multiple else {tag}
        self._unsettled -= settled
        return settled

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._acked |= self._settle(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        nacked = self._settle(delivery_tag, multiple)
        log.warning("broker refused (nack) %d message(s) up to delivery tag %d",
                    len(nacked), delivery_tag)

    def _publish(self, row: Any) -> None:
        self.producer.publish(
            row.body, exchange=topology.EVENTS_EXCHANGE, routing_key=row.type,
            message_id=row.event_id, delivery_mode=2,
            content_type="application/json", content_encoding="utf-8",
        )

    def publish(self, rows: Sequence[Any], confirmed: list[int]) -> None:
        """Publish ``rows`` in order and append to ``confirmed`` the seq of each row the
        broker confirmed, up to the first one it did not (those after it are published
        again with it, in order; the inbox absorbs the twins). Raises when the connection
        is lost or the confirms do not come in :data:`CONFIRM_TIMEOUT_SECONDS`, after
        filling ``confirmed`` with what was confirmed by then."""
        if not self._confirms:
            for row in rows:
                self._publish(row)
                confirmed.append(row.seq)
            return
        tags: list[int] = []
        try:
            for row in rows:
                self._last_tag += 1  # the broker's tag for this publish on this channel
                self._unsettled.add(self._last_tag)
                tags.append(self._last_tag)
                self._publish(row)
            self._wait_for_confirms()
        finally:
            for row, tag in zip(rows, tags, strict=False):
                if tag not in self._acked:
                    break
                confirmed.append(row.seq)
            self._acked.difference_update(tags)

    def _wait_for_confirms(self) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while self._unsettled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UnconfirmedPublish(f"{len(self._unsettled)} message(s) not confirmed "
                                         f"in {CONFIRM_TIMEOUT_SECONDS:.0f} s")
            try:
                self.connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue  # the deadline check above ends it


class OutboxRelay:
    """Moves messages from a service's outbox to the broker.

    A row is marked sent only after the broker confirmed it; a crash between the two
    republishes it, which the consumers' inbox absorbs. Several relays of one service
    may run: on PostgreSQL rows are claimed with ``FOR UPDATE SKIP LOCKED``. A batch is
    published whole and its confirms awaited once (:class:`ConfirmedPublisher`).
    """

    def __init__(self, service: str, engine: Engine, session_factory: sessionmaker[Session],
                 tables: MessagingTables, broker_url: str, *, poll_seconds: float = 0.05,
                 batch_size: int = 200, wakeup: threading.Event | None = None):
        self.service = service
        self._engine = engine
        self._session_factory = session_factory
        self._outbox = tables.outbox
        self._broker_url = broker_url
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self.wakeup = wakeup or threading.Event()
        self._lock_rows = engine.dialect.name == "postgresql"

    def connect(self) -> Connection:
        """A broker connection for :meth:`publisher`."""
        return broker.connect(self._broker_url, confirm_each_publish=False, heartbeat=0)

    def publisher(self, connection: Connection) -> ConfirmedPublisher:
        return ConfirmedPublisher(connection, confirms=not broker.is_memory(self._broker_url))

    def publish_pending(self, publisher: ConfirmedPublisher) -> int:
        """Publish one batch of unsent messages and mark the confirmed ones sent, in the
        transaction that claimed them; returns how many were marked."""
        outbox = self._outbox
        query = (select(outbox.c.seq, outbox.c.event_id, outbox.c.type, outbox.c.body)
                 .where(outbox.c.sent_at.is_(None)).order_by(outbox.c.seq)
                 .limit(self._batch_size))
        if self._lock_rows:
            query = query.with_for_update(skip_locked=True)
        with self._session_factory() as session:
            rows = session.execute(query).all()
            confirmed: list[int] = []
            try:
                if rows:
                    publisher.publish(rows, confirmed)
            finally:
                if confirmed:
                    session.execute(update(outbox).where(outbox.c.seq.in_(confirmed))
                                    .values(sent_at=utcnow()))
                session.commit()
            return len(confirmed)

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting after broker failures.

        A connection that had worked is replaced at once the first time it fails (a
        broker restarted while the relay idled), as kombu's publish retries did when each
        message was published alone; a failure right after connecting waits a second
        before the next attempt. The connection has no heartbeats: the relay would not
        service them while it waits for a commit, and the broker would drop it."""
        while not stop.is_set():
            worked = False
            try:
                with self.connect() as connection:
                    connection.ensure_connection(max_retries=3)
                    publisher = self.publisher(connection)
                    log.info("relay %s connected", self.service)
                    with self._listening() as listener:
                        while not stop.is_set():
                            published = self.publish_pending(publisher)
                            worked = True
                            if published >= self._batch_size:
                                continue
                            self._wait(listener)
            except Exception:  # broker or database down: reconnect, carry on
                if worked:
                    log.warning("relay %s lost its connection; reconnecting", self.service,
                                exc_info=True)
                    continue
                log.exception("relay %s failed; retrying", self.service)
                stop.wait(1.0)
        log.info("relay %s stopped", self.service)

    @contextlib.contextmanager
    def _listening(self) -> Iterator[Any]:
        """A psycopg connection LISTENing on the outbox channel (PostgreSQL), else None."""
        if self._engine.dialect.name != "postgresql":
            yield None
            return
        import psycopg

        url = self._engine.url.set(drivername="postgresql")
        connection = psycopg.connect(url.render_as_string(hide_password=False),
                                     autocommit=True)
        try:
            connection.execute(f"LISTEN {OUTBOX_CHANNEL}")
            yield connection
        finally:
            connection.close()

    def _wait(self, listener: Any) -> None:
        """Until a commit announces messages (PostgreSQL) or the in-process wakeup is set
        (elsewhere), at most the poll interval."""
        if listener is None:
            self.wakeup.wait(self._poll_seconds)
            self.wakeup.clear()
            return
        for _ in listener.notifies(timeout=IDLE_POLL_SECONDS, stop_after=1):
            pass

    def drain(self, timeout: float = 10.0) -> None:
        """Publish everything pending now (tests and one-shot tools)."""
        deadline = time.monotonic() + timeout
        with self.connect() as connection:
            publisher = self.publisher(connection)
            while self.publish_pending(publisher) and time.monotonic() < deadline:
                pass
