"""ca-signer's records: the CAs it holds and every certificate it was asked to sign."""

from __future__ import annotations

from datetime import datetime

from chancery_shared.db import service_metadata
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.tables import MessagingTables
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

metadata = service_metadata()
messaging = MessagingTables(metadata)


class Base(DeclarativeBase):
    metadata = metadata


class Issuer(Base):
    """A CA certificate with its private key, encrypted at rest (PKCS#8, passphrase)."""

    __tablename__ = "issuers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # from the SKI
    kind: Mapped[str] = mapped_column(String(10))  # "root" or "issuing"
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("issuers.id"))
    subject: Mapped[str] = mapped_column(Text)
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_key_pem: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # set by a revocation, cleared by the next CRL publication (the CRL job republishes)
    crl_stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IssuedCertificate(Base):
    """One issuance: recorded as an intent (serial reserved) before anything is signed.

    ``status``: ``signing`` (intent recorded), ``issued``, ``rejected`` (nothing signed),
    ``revoked``. ``issuance_id`` is unique, so a redelivered or repeated command finds
    this row and re-announces it instead of signing a second certificate.
    """

    __tablename__ = "certificates"
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # lower-case hex
    issuance_id: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[str | None] = mapped_column(String(64), index=True)
    issuer_id: Mapped[str] = mapped_column(ForeignKey("issuers.id"))
    profile: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    sans: Mapped[list[str]] = mapped_column(JSON)
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    lint_findings: Mapped[list[dict] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revocation_reason: Mapped[str | None] = mapped_column(String(40))


class Crl(Base):
    """One published CRL of one issuer; ``number`` is the CRL number, monotonic per issuer.

    Only the newest is served; a few older ones are kept for the record.
    """

    __tablename__ = "crls"
    issuer_id: Mapped[str] = mapped_column(ForeignKey("issuers.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    this_update: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_update: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    entries: Mapped[int] = mapped_column(Integer)
    der: Mapped[bytes] = mapped_column(LargeBinary)
