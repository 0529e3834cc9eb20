"""The audit domain: one append-only log per account, one entry per message on the bus.

Entries are written once and never changed. Each belongs to a *log* — the account's,
or the platform's for platform-wide messages — and carries its position in that log
(``sequence``, 1, 2, 3…). A hash chain links the entries of a log in that order
(``prev_hash``, ``hash``; see ``chain.py``) and the log keeps its head
(``last_sequence``, ``head_hash``); signed checkpoints of heads (``AuditCheckpoint``)
let a verifier see a log cut short even when its head was rewritten.

Free-text columns are unbounded on purpose: a message is validated by its producer,
not by us, and the log must not refuse an entry because a name or a summary was long.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from chancery_shared.db import UtcDateTime, service_metadata
from chancery_shared.messaging.envelope import Envelope, utcnow
from chancery_shared.messaging.tables import MessagingTables
from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

metadata = service_metadata()
messaging = MessagingTables(metadata)

PLATFORM_LOG = "platform"  # the log of messages that belong to no account
Position = BigInteger().with_variant(Integer, "sqlite")
UnitList = ARRAY(String).with_variant(JSON(), "sqlite")


def new_id() -> str:
    return str(uuid.uuid4())


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every time we store is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def log_key(account_id: str | None) -> str:
    """The log an entry belongs to: its account's, or the platform's."""
    return f"account:{account_id}" if account_id is not None else PLATFORM_LOG


class Base(DeclarativeBase):
    metadata = metadata


class AuditLog(Base):
    """The head of one append-only log (an account's, or the platform's).

    Appending locks this row, so positions in a log are dense and never shared even
    with several audit consumers; the hash chain will keep its head hash here too.
    """

    __tablename__ = "audit_logs"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String)
    last_sequence: Mapped[int] = mapped_column(Position, default=0)
    # the hash of the last entry (null: no entry yet, the chain starts at its genesis)
    head_hash: Mapped[str | None] = mapped_column(String(64))
    # after a purge: the first entry kept, and the hash it follows (else 1 and genesis)
    first_sequence: Mapped[int] = mapped_column(Position, default=1, server_default="1")
    anchor_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def next_sequence(self) -> int:
        self.last_sequence = (self.last_sequence or 0) + 1
        return self.last_sequence

    def append(self, entry: AuditEntry) -> None:
        """Link ``entry`` at the end of this log's chain (the log row is locked)."""
        from chancery_audit import chain

        chain.seal(entry, self.head_hash or self.anchor_hash or chain.genesis(self.key))
        self.head_hash = entry.hash


class AuditEntry(Base):
    """What happened, who did it, when, from where, to what — one message on the bus."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        UniqueConstraint("log_key", "sequence", name="uq_audit_entries_log_sequence"),
        Index("ix_audit_entries_account_at", "account_id", "at", "id"),
        Index("ix_audit_entries_at", "at", "id"),
        Index("ix_audit_entries_user_at", "user_id", "at"),
        # LIKE 'prefix%' can use a PostgreSQL btree only with the pattern operator class.
        Index("ix_audit_entries_action", "action",
              postgresql_ops={"action": "text_pattern_ops"}),
        Index("ix_audit_entries_correlation", "correlation_id"),
        Index("ix_audit_entries_target", "target"),
        # action=<types>, newest first (everywhere, and within an account)
        Index("ix_audit_entries_action_at", "action", "at", "id"),
        Index("ix_audit_entries_account_action_at", "account_id", "action", "at", "id"),
        # target=<subject type> alone, newest first (everywhere, and within an account)
        Index("ix_audit_entries_subject_type_at", "subject_type", "at", "id"),
        Index("ix_audit_entries_account_subject_type_at", "account_id", "subject_type", "at",
              "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    log_key: Mapped[str] = mapped_column(ForeignKey("audit_logs.key"))
    sequence: Mapped[int] = mapped_column(Position)
    account_id: Mapped[str | None] = mapped_column(String)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when it happened
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    user_id: Mapped[str | None] = mapped_column(String)
    user_name: Mapped[str | None] = mapped_column(Text)  # or the service, for automatic steps
    ip: Mapped[str | None] = mapped_column(String)
    service: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    subject_type: Mapped[str] = mapped_column(String)
    subject_id: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    correlation_id: Mapped[str] = mapped_column(String)
    causation_id: Mapped[str | None] = mapped_column(String)
    schema_version: Mapped[int] = mapped_column(Integer)
    envelope: Mapped[str] = mapped_column(Text)  # the message exactly as received
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    log: Mapped[AuditLog] = relationship(lazy="raise")
    units: Mapped[list[AuditEntryUnit]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="AuditEntryUnit.unit_id")
    searchable: Mapped[AuditEntryText] = relationship(lazy="raise", cascade="all, delete-orphan")

    @classmethod
    def from_envelope(cls, envelope: Envelope, *, log: AuditLog,
                      unit_ids: Iterable[str]) -> AuditEntry:
        """The entry of ``envelope``, appended (and chained) at the end of ``log``."""
        actor = envelope.actor
        subject_type, subject_id = envelope.subject["type"], envelope.subject["id"]
        entry = cls(
            event_id=envelope.event_id, log=log, sequence=log.next_sequence(),
            account_id=envelope.account_id,
            at=as_utc(datetime.fromisoformat(envelope.occurred_at)), recorded_at=utcnow(),
            user_id=actor.get("user_id"), user_name=actor.get("user_name") or actor.get("system"),
            ip=actor.get("ip"), service=envelope.source, action=envelope.type,
            subject_type=subject_type, subject_id=subject_id,
            target=f"{subject_type}:{subject_id}", description=envelope.summary,
            correlation_id=envelope.correlation_id, causation_id=envelope.causation_id,
            schema_version=envelope.schema_version, envelope=envelope.to_json(),
        )
        entry.units = [AuditEntryUnit(unit_id=unit_id, at=entry.at, account_id=entry.account_id,
                                      action=entry.action)
                       for unit_id in sorted(set(unit_ids))]
        entry.searchable = AuditEntryText.of(entry)
        entry.log_key = log.key
        log.append(entry)
        return entry

    @property
    def unit_ids(self) -> list[str]:
        return [unit.unit_id for unit in self.units]

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.envelope)


class AuditEntryUnit(Base):
    """A business unit an entry concerns: what a unit administrator may read."""

    __tablename__ = "audit_entry_units"
    __table_args__ = (Index("ix_audit_entry_units_unit", "unit_id", "entry_id"),
                      # a unit administrator's pages: their unit's entries, newest first
                      Index("ix_audit_entry_units_unit_at", "unit_id", "at", "entry_id"),
                      # … and of one action (or the few types under a prefix)
                      Index("ix_audit_entry_units_unit_action_at", "unit_id", "action", "at",
                            "entry_id"))

    entry_id: Mapped[str] = mapped_column(ForeignKey("audit_entries.id", ondelete="CASCADE"),
                                          primary_key=True)
    unit_id: Mapped[str] = mapped_column(String, primary_key=True)
    # copies of the entry's, so a unit's entries can be read in time order from here
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    account_id: Mapped[str | None] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)


#: How much of the searchable text the time indexes hold: 500 characters are at most
#: 2,000 bytes of UTF-8, within a btree index row's limit with the keys beside them.
HEAD_CHARS = 500

#: Joins the searchable fields in ``AuditEntryText.text``. Free text may not contain it
#: (``schemas.py`` refuses control characters), so a match never spans two fields.
FIELD_SEPARATOR = "\x1f"


def searchable_text(description: str | None, user_name: str | None, target: str | None) -> str:
    """What free text is matched against: the description, the user's name and the
    target, one after the other (the migration that made the table says it in SQL)."""
    return FIELD_SEPARATOR.join((description or "", user_name or "", target or ""))


class AuditEntryText(Base):
    """An entry's free-text fields in a narrow row of their own, for free-text search.

    The fields are also on the entry; they are copied here because matching ``%word%``
    through a trigram index means rechecking every candidate row the index returns, and
    an entry row (with its whole message) is some ten times wider than this one: a rare
    word made of common trigrams made PostgreSQL recheck tens of thousands of entries.
    One index serves the three fields at once: a GIN index of the account (btree_gin),
    the units (array_ops) and the text's trigrams, so a search within an account or a
    unit administrator's units gets only those candidates from it, not every entry in
    the platform holding the word's trigrams.

    The newest entries are read in time order from btree indexes that also hold the
    text's first HEAD_CHARS characters (``head``), so the first looks among them read no
    table row at all; ``complete`` says whether the head is the whole text (an index row
    must stay under PostgreSQL's 2,704 bytes, and a description has no bound).
    """

    __tablename__ = "audit_entry_texts"
    __table_args__ = (
        Index("ix_audit_entry_texts_account_units_text", "account_id", "unit_ids", "text",
              postgresql_using="gin", postgresql_ops={"text": "gin_trgm_ops"}
              ).ddl_if(dialect="postgresql"),
        Index("ix_audit_entry_texts_account_at", "account_id", "at", "entry_id",
              postgresql_include=["head", "complete"]),
        Index("ix_audit_entry_texts_at", "at", "entry_id",
              postgresql_include=["head", "complete"]),
    )

    entry_id: Mapped[str] = mapped_column(ForeignKey("audit_entries.id", ondelete="CASCADE"),
                                          primary_key=True)
    # copies of the entry's: a match is narrowed to an account (or units) and ordered by
    # time here; the units are an array on PostgreSQL (JSON on SQLite, which does not
    # read them: it checks audit_entry_units)
    account_id: Mapped[str | None] = mapped_column(String)
    unit_ids: Mapped[list[str]] = mapped_column(UnitList)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    text: Mapped[str] = mapped_column(Text)
    head: Mapped[str] = mapped_column(Text)
    complete: Mapped[bool] = mapped_column(Boolean)

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryText:
        text = searchable_text(entry.description, entry.user_name, entry.target)
        return cls(at=entry.at, account_id=entry.account_id, unit_ids=entry.unit_ids,
                   text=text, head=text[:HEAD_CHARS], complete=len(text) <= HEAD_CHARS)


class AuditSigningKey(Base):
    """An Ed25519 key that signs checkpoints; the private half PKCS#8-encrypted under
    CHANCERY_AUDIT_KEY_PASSPHRASE. Old keys stay, so old checkpoints still verify."""

    __tablename__ = "audit_signing_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # from the public key
    public_key: Mapped[str] = mapped_column(String(64))  # raw 32 bytes, base64
    encrypted_private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditCheckpoint(Base):
    """A signed statement that log ``log_key`` had ``sequence`` entries ending in
    ``head_hash`` at ``signed_at`` (also published as ``audit.checkpoint.signed``)."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index("ix_audit_checkpoints_log", "log_key", "sequence"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    log_key: Mapped[str] = mapped_column(ForeignKey("audit_logs.key"))
    sequence: Mapped[int] = mapped_column(Position)
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(ForeignKey("audit_signing_keys.id"))
    signature: Mapped[str] = mapped_column(String(100))  # Ed25519, base64


# --- what entries concern, for retention (BR 5.4.3; see retention.py) -----------------

#: The kinds of thing an entry can concern whose life sets how long the entry is kept
#: (a domain: by its name, the validations of it that certificates relied on).
ORDER, CERTIFICATE, ISSUER, DOMAIN = "order", "certificate", "issuer", "domain"


class AuditEntryConcern(Base):
    """An order, a subscriber certificate (by serial) or a CA (issuer) an entry is about.

    Learnt from the message when the entry is recorded (``lifecycles.concerns_of``);
    not part of the chained content: it is derived from the envelope, which is.
    """

    __tablename__ = "audit_entry_concerns"

    entry_id: Mapped[str] = mapped_column(ForeignKey("audit_entries.id", ondelete="CASCADE"),
                                          primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    ref: Mapped[str] = mapped_column(String, primary_key=True)


class AuditCertificate(Base):
    """A subscriber certificate as the messages told audit about it: its order, and when
    it stops being valid (``not_after``, or ``revoked_at`` once revoked).

    Kept after the entries about it are purged: a later entry about its order still
    needs it.
    """

    __tablename__ = "audit_certificates"
    __table_args__ = (Index("ix_audit_certificates_order", "order_id"),)

    serial: Mapped[str] = mapped_column(String, primary_key=True)
    order_id: Mapped[str | None] = mapped_column(String)
    account_id: Mapped[str | None] = mapped_column(String)
    issuer_id: Mapped[str | None] = mapped_column(String)
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    @property
    def ends_at(self) -> datetime | None:
        """When it stopped (or stops) being valid; None while audit does not know."""
        ends = [moment for moment in (self.not_after, self.revoked_at) if moment is not None]
        return min(ends) if ends else None


class AuditCertificateName(Base):
    """A name a certificate was issued for (its SANs; ``*.`` dropped from a wildcard):
    how a domain's validation entries find the certificates that may have relied on
    them."""

    __tablename__ = "audit_certificate_names"
    __table_args__ = (Index("ix_audit_certificate_names_name", "name"),)

    serial: Mapped[str] = mapped_column(ForeignKey("audit_certificates.serial",
                                                   ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)


class AuditOrder(Base):
    """An order that ended without a certificate (rejected, cancelled or failed): the
    entries about it are kept two years from then. Orders audit saw issue are known by
    their certificates; any other order is still open."""

    __tablename__ = "audit_orders"

    order_id: Mapped[str] = mapped_column(String, primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String)
    ended_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_as: Mapped[str] = mapped_column(String)  # the message type that ended it


class AuditIssuer(Base):
    """A CA certificate (root or issuing) and when it expires: its key's lifecycle
    entries are kept two years past that."""

    __tablename__ = "audit_issuers"

    issuer_id: Mapped[str] = mapped_column(String, primary_key=True)
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
