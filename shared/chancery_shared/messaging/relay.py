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
from collections.abc import Iterator
from typing import Any

from kombu import Producer
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


class OutboxRelay:
    """Moves messages from a service's outbox to the broker.

    A row is marked sent only after the broker confirmed it; a crash between the two
    republishes it, which the consumers' inbox absorbs. Several relays of one service
    may run: on PostgreSQL rows are claimed with ``FOR UPDATE SKIP LOCKED``.
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

    def publish_pending(self, producer: Producer) -> int:
        """Publish one batch of unsent messages; returns how many were published."""
        outbox = self._outbox
        query = (select(outbox.c.seq, outbox.c.event_id, outbox.c.type, outbox.c.body)
                 .where(outbox.c.sent_at.is_(None)).order_by(outbox.c.seq)
                 .limit(self._batch_size))
        if self._lock_rows:
            query = query.with_for_update(skip_locked=True)
        with self._session_factory() as session:
            rows = session.execute(query).all()
            published: list[int] = []
            try:
                for row in rows:
                    producer.publish(
                        row.body, exchange=topology.EVENTS_EXCHANGE, routing_key=row.type,
                        message_id=row.event_id, delivery_mode=2,
                        content_type="application/json", content_encoding="utf-8",
                        retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2},
                    )
                    published.append(row.seq)
            finally:
                if published:
                    session.execute(update(outbox).where(outbox.c.seq.in_(published))
                                    .values(sent_at=utcnow()))
                session.commit()
            return len(published)

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting after broker failures."""
        while not stop.is_set():
            try:
                with broker.connect(self._broker_url) as connection:
                    connection.ensure_connection(max_retries=3)
                    channel = connection.channel()
                    topology.declare(channel)
                    producer = Producer(channel)
                    log.info("relay %s connected", self.service)
                    with self._listening() as listener:
                        while not stop.is_set():
                            if self.publish_pending(producer) >= self._batch_size:
                                continue
                            self._wait(listener)
            except Exception:  # broker or database down: wait, reconnect, carry on
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
        with broker.connect(self._broker_url) as connection:
            channel = connection.channel()
            topology.declare(channel)
            producer = Producer(channel)
            while self.publish_pending(producer) and time.monotonic() < deadline:
                pass
