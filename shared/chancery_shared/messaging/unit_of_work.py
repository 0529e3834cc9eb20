"""The unit of work: one database transaction holding state changes and their messages.

Messages emitted inside a unit of work are written to the service's outbox table in
the same transaction as the change they describe; the relay publishes them after
commit. A crash at any point therefore loses nothing and publishes nothing that was
rolled back. Consumers record the ids of the messages they handled (the inbox) in the
same transaction as the effect, so a redelivered message has no second effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from chancery_shared.messaging.envelope import Context, Envelope, new_envelope, utcnow
from chancery_shared.messaging.relay import OUTBOX_CHANNEL
from chancery_shared.messaging.tables import MessagingTables


class UnitOfWork:
    def __init__(self, session_factory: sessionmaker[Session], tables: MessagingTables,
                 source: str, after_commit: Callable[[], None] | None = None):
        self._session_factory = session_factory
        self._tables = tables
        self.source = source
        self._after_commit = after_commit
        self.session: Session
        self.emitted: list[Envelope] = []

    def __enter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.emitted = []
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.session.in_transaction():
                # Whatever was not committed is undone. Detach first: read-only work ends
                # here too, and its objects must stay readable (for the response) instead
                # of being expired by the rollback.
                self.session.expunge_all()
                self.session.rollback()
        finally:
            self.session.close()

    # --- messages out ------------------------------------------------------------------

    def emit(self, envelope: Envelope) -> Envelope:
        self.session.execute(insert(self._tables.outbox).values(
            event_id=envelope.event_id, type=envelope.type, body=envelope.to_json(),
            created_at=utcnow(), attempts=0,
        ))
        if self.session.get_bind().dialect.name == "postgresql":
            # wakes the relay at commit (dropped on rollback; repeats within one
            # transaction are folded into one by PostgreSQL): see relay.py
            self.session.execute(text("SELECT pg_notify(:channel, '')"),
                                 {"channel": OUTBOX_CHANNEL})
        self.emitted.append(envelope)
        return envelope

    def event(self, type: str, context: Context, *, subject: tuple[str, str], summary: str,
              data: dict[str, Any], correlation_id: str | None = None,
              schema_version: int = 1) -> Envelope:
        """Build, validate and write one message of ``type`` to the outbox."""
        return self.emit(new_envelope(
            type=type, source=self.source, context=context, subject_type=subject[0],
            subject_id=subject[1], summary=summary, data=data, schema_version=schema_version,
            correlation_id=correlation_id,
        ))

    # --- messages in -------------------------------------------------------------------

    def already_processed(self, consumer: str, event_id: str) -> bool:
        inbox = self._tables.inbox
        row = self.session.execute(
            select(inbox.c.event_id).where(inbox.c.consumer == consumer,
                                           inbox.c.event_id == event_id)
        ).first()
        return row is not None

    def mark_processed(self, consumer: str, event_id: str) -> None:
        self.session.execute(insert(self._tables.inbox).values(
            consumer=consumer, event_id=event_id, processed_at=utcnow()))

    # --- ending ------------------------------------------------------------------------

    def commit(self) -> None:
        self.session.commit()
        if self.emitted and self._after_commit:
            self._after_commit()

    def rollback(self) -> None:
        self.session.rollback()


DuplicateDelivery = IntegrityError  # a concurrent twin committed the same inbox row first
