"""The outbox, inbox and idempotency tables every service adds to its own database."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)


class MessagingTables:
    """Tables added to a service's metadata (and so to its Alembic migrations)."""

    def __init__(self, metadata: MetaData):
        self.outbox = Table(
            "outbox", metadata,
            Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                   autoincrement=True),
            Column("event_id", String(36), nullable=False, unique=True),
            Column("type", String(120), nullable=False),
            Column("body", Text, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("sent_at", DateTime(timezone=True), nullable=True),
            Column("attempts", Integer, nullable=False, default=0),
        )
        Index("ix_outbox_unsent", self.outbox.c.sent_at, self.outbox.c.seq)
        self.inbox = Table(
            "inbox", metadata,
            Column("consumer", String(120), nullable=False),
            Column("event_id", String(36), nullable=False),
            Column("processed_at", DateTime(timezone=True), nullable=False),
            PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
        )
        self.idempotency = Table(
            "idempotency_keys", metadata,
            Column("principal", String(64), nullable=False),
            Column("key", String(255), nullable=False),
            Column("method", String(10), nullable=False),
            Column("path", String(500), nullable=False),
            Column("request_hash", String(64), nullable=False),
            Column("status_code", Integer, nullable=True),
            Column("response_body", Text, nullable=True),
            Column("response_headers", Text, nullable=True),
            Column("created_at", DateTime(timezone=True), nullable=False),
            PrimaryKeyConstraint("principal", "key", name="pk_idempotency_keys"),
        )
