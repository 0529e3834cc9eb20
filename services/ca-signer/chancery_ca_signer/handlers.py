"""ca-signer's service layer: keep the CAs, sign what the registration authority approved.

The signer takes instructions only from orders (the registration authority), but trusts
nothing in them blindly: the CSR is parsed and its key checked again, the certificate is
built from the approved names (never from the CSR's subject), linted before it is
signed, and compared with what was linted after.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from chancery_shared.messaging.envelope import Context, Envelope, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import NotFound
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chancery_ca_signer.model import IssuedCertificate, Issuer
from chancery_ca_signer.pki.csr import CsrRejected, parse_csr
from chancery_ca_signer.pki.hierarchy import create_hierarchy
from chancery_ca_signer.pki.issuance import IssuanceRejected, issue_tls_certificate
from chancery_ca_signer.pki.keys import EncryptedPemKey
from chancery_ca_signer.pki.urls import issuer_id as issuer_id_of

log = logging.getLogger(__name__)
SOURCE = "ca-signer"


class KeyRing:
    """Decrypted CA keys, held in this process's memory only, loaded once per issuer."""

    def __init__(self, passphrase: bytes):
        self._passphrase = passphrase
        self._keys: dict[str, EncryptedPemKey] = {}
        self._lock = threading.Lock()

    def key_for(self, issuer: Issuer) -> EncryptedPemKey:
        with self._lock:
            if issuer.id not in self._keys:
                self._keys[issuer.id] = EncryptedPemKey.load(issuer.encrypted_key_pem,
                                                             self._passphrase)
            return self._keys[issuer.id]

    @property
    def passphrase(self) -> bytes:
        return self._passphrase


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _issuer_row(cert: x509.Certificate, key: EncryptedPemKey, kind: str,
                parent_id: str | None) -> Issuer:
    return Issuer(id=issuer_id_of(cert), kind=kind, parent_id=parent_id,
                  subject=cert.subject.rfc4514_string(), certificate_pem=_pem(cert),
                  encrypted_key_pem=key.encrypted_pem.decode(),
                  not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)


def create_development_hierarchy(uow: UnitOfWork, keys: KeyRing, public_base_url: str) -> bool:
    """First start: a root and an issuing CA for development; False if CAs exist."""
    if uow.session.execute(select(Issuer.id).limit(1)).first():
        return False
    hierarchy = create_hierarchy(passphrase=keys.passphrase, public_base_url=public_base_url,
                                 organization="Chancery Development", country="US",
                                 now=utcnow())
    root = _issuer_row(hierarchy.root_cert, hierarchy.root_key, "root", None)
    issuing = _issuer_row(hierarchy.issuing_cert, hierarchy.issuing_key, "issuing", root.id)
    uow.session.add_all([root, issuing])
    uow.commit()
    log.warning("created a development CA hierarchy: root %s, issuing CA %s", root.id,
                issuing.id)
    return True


def list_issuers(uow: UnitOfWork) -> list[Issuer]:
    return list(uow.session.execute(select(Issuer).order_by(Issuer.kind.desc(),
                                                            Issuer.created_at)).scalars())


def issuer_certificate_der(uow: UnitOfWork, issuer_id: str) -> bytes:
    issuer = uow.session.get(Issuer, issuer_id)
    if issuer is None:
        raise NotFound("no such issuer")
    return x509.load_pem_x509_certificate(issuer.certificate_pem.encode()).public_bytes(
        serialization.Encoding.DER)


def _issuing_ca(uow: UnitOfWork, profile: str) -> Issuer | None:
    """The issuer of ``profile``: for now the newest active issuing CA signs every profile."""
    return uow.session.execute(
        select(Issuer).where(Issuer.kind == "issuing", Issuer.active.is_(True))
        .order_by(Issuer.created_at.desc())).scalars().first()


def _announce_issued(uow: UnitOfWork, context: Context, record: IssuedCertificate,
                     issuer: Issuer) -> None:
    assert record.not_before and record.not_after and record.certificate_pem
    uow.event("ca_signer.certificate.issued", context, subject=("certificate", record.serial),
              summary=f"ca-signer issued certificate {record.serial} for "
                      f"{', '.join(record.sans)} (order {record.order_id})",
              data={"order_id": record.order_id, "issuance_id": record.issuance_id,
                    "serial": record.serial, "issuer_id": issuer.id,
                    "not_before": isoformat(record.not_before),
                    "not_after": isoformat(record.not_after), "sans": record.sans,
                    "certificate_pem": record.certificate_pem,
                    "chain_pem": issuer.certificate_pem})


def _announce_rejected(uow: UnitOfWork, context: Context, order_id: str, issuance_id: str,
                       reason: str, findings: list[dict[str, Any]]) -> None:
    uow.event("ca_signer.certificate.rejected", context, subject=("order", order_id),
              summary=f"ca-signer refused to sign order {order_id}: {reason}",
              data={"order_id": order_id, "issuance_id": issuance_id, "reason": reason,
                    "lint_findings": findings})


def sign_certificate(envelope: Envelope, uow: UnitOfWork, keys: KeyRing,
                     public_base_url: str, now: datetime | None = None) -> None:
    """Handle ``ca_signer.certificate.sign``: exactly one certificate per issuance id."""
    data = envelope.data
    context = Context.following(envelope, "ca-signer")
    order_id, issuance_id = data["order_id"], data["issuance_id"]
    record = uow.session.execute(select(IssuedCertificate).where(
        IssuedCertificate.issuance_id == issuance_id)).scalar_one_or_none()
    if record is not None and record.status == "issued":
        _announce_issued(uow, context, record, uow.session.get(Issuer, record.issuer_id))
        return  # a repeated command: say it again, sign nothing
    if record is not None and record.status == "rejected":
        _announce_rejected(uow, context, order_id, issuance_id,
                           record.rejection_reason or "rejected", record.lint_findings or [])
        return
    issuer = _issuing_ca(uow, data["profile"])
    if issuer is None:
        _announce_rejected(uow, context, order_id, issuance_id,
                           "no issuing CA is configured for this profile", [])
        return
    try:
        csr = parse_csr(data["csr_pem"])
    except CsrRejected as exc:
        _announce_rejected(uow, context, order_id, issuance_id, exc.reason, [])
        return
    if record is None:
        # Record the intent (serial reserved) durably before any signature exists.
        record = IssuedCertificate(
            serial=format(x509.random_serial_number(), "x"), issuance_id=issuance_id,
            order_id=order_id, account_id=envelope.account_id, issuer_id=issuer.id,
            profile=data["profile"], status="signing", sans=list(data["sans"]))
        uow.session.add(record)
        try:
            uow.session.commit()
        except IntegrityError:
            uow.session.rollback()
            raise  # a competing worker took this issuance: retry finds its record
    subject = data.get("subject") or {}
    organization = {k: v for k, v in subject.items() if k != "common_name"}
    requested = data.get("not_after")
    try:
        issued = issue_tls_certificate(
            x509.load_pem_x509_certificate(issuer.certificate_pem.encode()),
            keys.key_for(issuer), csr, list(data["sans"]), data["profile"], organization or None,
            now or utcnow(), datetime.fromisoformat(requested) if requested else None,
            public_base_url, serial=int(record.serial, 16), include_common_name=False)
    except IssuanceRejected as exc:
        findings = [f.as_dict() for f in exc.findings]
        record.status, record.rejection_reason, record.lint_findings = "rejected", exc.reason, \
            findings
        _announce_rejected(uow, context, order_id, issuance_id, exc.reason, findings)
        return
    record.status = "issued"
    record.certificate_pem = issued.pem
    record.not_before, record.not_after = issued.not_before, issued.not_after
    record.lint_findings = [f.as_dict() for f in issued.lint_findings]
    _announce_issued(uow, context, record, issuer)


# RFC 5280 CRLReason names (5.3.1) in snake_case; orders offers the subscriber's subset.
REVOCATION_REASONS = ("unspecified", "key_compromise", "ca_compromise", "affiliation_changed",
                      "superseded", "cessation_of_operation", "certificate_hold",
                      "privilege_withdrawn", "aa_compromise")


def revoke_certificate(envelope: Envelope, uow: UnitOfWork, now: datetime | None = None) -> None:
    """Handle ``ca_signer.certificate.revoke``: record the revocation once.

    A serial this CA never issued (or never finished signing) is logged and ignored;
    a certificate already revoked keeps its first date and reason, and the answer is
    repeated so the registration authority converges. CRLs and OCSP come later and read
    these records.
    """
    data = envelope.data
    context = Context.following(envelope, "ca-signer")
    serial = str(data["serial"]).lower()
    record = uow.session.execute(
        select(IssuedCertificate).where(IssuedCertificate.serial == serial)
        .with_for_update()).scalar_one_or_none()
    if record is None or record.status not in ("issued", "revoked"):
        log.warning("asked to revoke %s, which this CA has not issued (%s); ignored", serial,
                    record.status if record else "unknown serial")
        return
    if envelope.account_id is not None and record.account_id not in (None, envelope.account_id):
        log.warning("account %s asked to revoke %s of another account; ignored",
                    envelope.account_id, serial)
        return
    reason = data["reason"]
    if reason not in REVOCATION_REASONS:
        log.warning("revocation of %s with unknown reason %r recorded as unspecified", serial,
                    reason)
        reason = "unspecified"
    already = record.status == "revoked"
    if not already:
        record.status = "revoked"
        record.revoked_at = (now or utcnow()).replace(microsecond=0)
        record.revocation_reason = reason
    assert record.revoked_at is not None and record.revocation_reason is not None
    # SQLite forgets the zone of a stored time; every time here is UTC
    revoked_at = isoformat(record.revoked_at if record.revoked_at.tzinfo
                           else record.revoked_at.replace(tzinfo=UTC))
    summary = (f"ca-signer revoked certificate {serial} ({record.revocation_reason}) for "
               f"{', '.join(record.sans)} (order {record.order_id})")
    if already:
        summary = (f"certificate {serial} was already revoked on {revoked_at} "
                   f"({record.revocation_reason})")
    uow.event("ca_signer.certificate.revoked", context.with_account(record.account_id),
              subject=("certificate", serial), summary=summary,
              data={"serial": serial, "reason": record.revocation_reason,
                    "revoked_at": revoked_at},
              correlation_id=envelope.correlation_id or record.order_id)
