"""ca-signer's records: the CAs it holds and every certificate it was asked to sign."""

from __future__ import annotations

from datetime import datetime

from chancery_shared.db import UtcDateTime, service_metadata
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
    """A CA certificate and where its private key is.

    ``key_backend``: ``software`` (``encrypted_key_pem``: PKCS#8 encrypted under the
    service passphrase), ``pkcs11`` (``key_reference``: the key's PKCS#11 URI in the
    HSM) or ``offline`` (a root: its key is not on this system at all, and what it signs
    — issuing CAs, the root CRL — is signed by ``chancery-ca`` on the operator's
    machine). ``active``: it signs new certificates (a rotated-out or revoked issuing CA
    keeps answering OCSP and publishing CRLs for what it issued until it expires).
    ``hierarchy``: ``public`` or ``private``, chosen when the root is registered and
    inherited by its issuing CAs; an issuing CA signs only the profiles of its hierarchy
    (``pki.profiles.PROFILE_HIERARCHY``), so a private certificate never chains to the
    public root.
    """

    __tablename__ = "issuers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # from the SKI
    kind: Mapped[str] = mapped_column(String(10))  # "root" or "issuing"
    hierarchy: Mapped[str] = mapped_column(String(10), default="public",
                                           server_default="public")
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("issuers.id"))
    subject: Mapped[str] = mapped_column(Text)
    certificate_pem: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str | None] = mapped_column(String(16))
    key_backend: Mapped[str] = mapped_column(String(16), default="software",
                                             server_default="software")
    encrypted_key_pem: Mapped[str | None] = mapped_column(Text)
    key_reference: Mapped[str | None] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # an issuing CA revoked by its root (listed on the root's CRL)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revocation_reason: Mapped[str | None] = mapped_column(String(40))
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
    # the subscriber key (SHA-256 of its SubjectPublicKeyInfo): finds every certificate of
    # a key reported compromised
    spki_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    # the linted to-be-signed certificate, recorded with the intent before the CA signs:
    # a retry after a crash signs these same bytes again, never a different certificate
    tbs_der: Mapped[bytes | None] = mapped_column(LargeBinary)


class ProfileIssuer(Base):
    """Which issuing CA signs each profile (``dv``, ``ov``, ``ev``, ``private``).

    Set by ``chancery-ca assign-profile`` and moved by ``rotate-issuing``; the CA is
    always of the profile's hierarchy. A profile with no row is signed by the newest
    active issuing CA of its hierarchy.
    """

    __tablename__ = "profile_issuers"
    profile: Mapped[str] = mapped_column(String(20), primary_key=True)
    issuer_id: Mapped[str] = mapped_column(ForeignKey("issuers.id"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OcspResponder(Base):
    """A delegated OCSP responder of one issuing CA: a short-lived certificate issued by
    the CA and its software key (PKCS#8 encrypted under the service passphrase).
    The newest unexpired one signs; a new one is made before the current one nears its end.
    """

    __tablename__ = "ocsp_responders"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # from the SKI
    issuer_id: Mapped[str] = mapped_column(ForeignKey("issuers.id"), index=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_key_pem: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OcspResponse(Base):
    """A signed OCSP answer kept for re-serving until it is due for refresh.

    One per issuer, serial and CertID hash (the answer must echo the request's hash).
    Only ``good`` and ``revoked`` answers are kept (an unknown serial costs nothing to
    store). A revocation deletes the serial's rows in the same transaction, so a cached
    answer never contradicts the records.
    """

    __tablename__ = "ocsp_responses"
    issuer_id: Mapped[str] = mapped_column(ForeignKey("issuers.id"), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash_algorithm: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(10))
    der: Mapped[bytes] = mapped_column(LargeBinary)
    this_update: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_update: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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


class BlockedKey(Base):
    """A subscriber key this CA never certifies again (BR 6.1.1.3(4)): one reported
    compromised, named by the SHA-256 of its SubjectPublicKeyInfo, whoever's it was.

    Recorded when a certificate is revoked for ``key_compromise`` (``serial``, the
    account it belonged to); announced as ``ca_signer.key.blocked`` so that orders refuses
    the key when a request is placed. The signer checks this table before every
    signature, as the last line.
    """

    __tablename__ = "blocked_keys"
    spki_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(40))  # "revocation"
    serial: Mapped[str | None] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(64))
    blocked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProblemReport(Base):
    """A certificate problem report (BR 4.9.3), sent by anyone through the public
    ``POST /ca/problem-reports``.

    ``kind``: ``key_compromise`` (proven by a CSR signed with the key over the fixed
    challenge: the key is blocklisted and every unexpired certificate for it revoked at
    once, ``revoked_serials``), or ``misuse`` / ``other`` (a message for the platform
    operator, who lists them). ``status``: ``resolved`` when handled on arrival,
    ``open`` when it waits for the operator.
    """

    __tablename__ = "problem_reports"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10))
    reporter_email: Mapped[str | None] = mapped_column(String(320))
    message: Mapped[str | None] = mapped_column(Text)
    serial: Mapped[str | None] = mapped_column(String(64))
    spki_sha256: Mapped[str | None] = mapped_column(String(64))
    revoked_serials: Mapped[list[str]] = mapped_column(JSON, default=list)
    reporter_ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # when the operator was mailed about it (CHANCERY_CA_OPERATOR_EMAILS and SMTP set);
    # None: not yet (the mail job picks it up)
    operator_notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
