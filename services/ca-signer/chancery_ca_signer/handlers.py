"""ca-signer's service layer: keep the CAs, sign what the registration authority approved.

The signer takes instructions only from orders (the registration authority), but trusts
nothing in them blindly: the CSR is parsed and its key checked again, the certificate is
built from the approved names (never from the CSR's subject), linted before it is
signed, and compared with what was linted after.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chancery_shared.messaging.envelope import Actor, Context, Envelope, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import NotFound
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from chancery_ca_signer.model import Crl, IssuedCertificate, Issuer
from chancery_ca_signer.pki import ocsp as ocsp_answers
from chancery_ca_signer.pki.crl import CRL_VALIDITY, REASON_FLAGS, RevokedEntry, build_crl
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
        issuer = uow.session.get(Issuer, record.issuer_id)
        if issuer is not None:
            issuer.crl_stale = True  # the CRL job republishes it within its check interval
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


# --- CRLs ----------------------------------------------------------------------------

#: A CRL older than this is republished even without a revocation (BR: at least every
#: 7 days; we do it daily).
CRL_MAX_AGE = timedelta(hours=24)
#: Publications kept per issuer (the newest is served; the others are the record).
KEPT_CRLS = 5


def as_utc(moment: datetime) -> datetime:
    """SQLite forgets the zone of a stored time; every time here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=64)
def _certificate(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def latest_crl(uow: UnitOfWork, issuer_id: str) -> Crl | None:
    return uow.session.execute(select(Crl).where(Crl.issuer_id == issuer_id)
                               .order_by(Crl.number.desc()).limit(1)).scalar_one_or_none()


def publish_crl(uow: UnitOfWork, keys: KeyRing, issuer: Issuer, now: datetime) -> Crl:
    """Build, sign, store and announce the next CRL of ``issuer``; the caller commits.

    Lists every certificate of this issuer that is revoked (a root's CRL lists revoked
    issuing CAs, none so far); the number is one more than the last, and two workers
    publishing at once collide on the (issuer, number) key instead of both succeeding.
    """
    rows = uow.session.execute(
        select(IssuedCertificate.serial, IssuedCertificate.revoked_at,
               IssuedCertificate.revocation_reason)
        .where(IssuedCertificate.issuer_id == issuer.id, IssuedCertificate.status == "revoked")
        .order_by(IssuedCertificate.revoked_at)).all()
    entries = [RevokedEntry(int(serial, 16), as_utc(revoked_at),
                            reason if reason in REASON_FLAGS else "unspecified")
               for serial, revoked_at, reason in rows]
    last = uow.session.execute(select(func.max(Crl.number))
                               .where(Crl.issuer_id == issuer.id)).scalar()
    number = (last or 0) + 1
    this_update = now.replace(microsecond=0)
    signed = build_crl(_certificate(issuer.certificate_pem), keys.key_for(issuer), entries,
                       number, this_update, this_update + CRL_VALIDITY)
    record = Crl(issuer_id=issuer.id, number=number, this_update=this_update,
                 next_update=this_update + CRL_VALIDITY, entries=len(entries),
                 der=signed.public_bytes(serialization.Encoding.DER))
    uow.session.add(record)
    uow.session.execute(delete(Crl).where(Crl.issuer_id == issuer.id,
                                          Crl.number <= number - KEPT_CRLS))
    issuer.crl_stale = False
    uow.event("ca_signer.crl.published", Context(actor=Actor.service("ca-signer"),
                                                 account_id=None),
              subject=("issuer", issuer.id),
              summary=f"ca-signer published CRL number {number} of {issuer.subject} "
                      f"listing {len(entries)} revoked certificate(s)",
              data={"issuer_id": issuer.id, "number": number, "entries": len(entries)})
    return record


def publish_due_crls(uow_factory: Callable[[], UnitOfWork], keys: KeyRing,
                     now: datetime) -> list[tuple[str, int]]:
    """Republish each unexpired issuer's CRL that a revocation made stale or that is a day old.

    Each issuer is its own transaction; one that another worker published meanwhile is
    skipped. Returns (issuer id, CRL number) of each publication.
    """
    with uow_factory() as uow:
        due = []
        for issuer in list_issuers(uow):
            if as_utc(issuer.not_after) <= now:
                continue
            latest = latest_crl(uow, issuer.id)
            old = latest is not None and as_utc(latest.this_update) <= now - CRL_MAX_AGE
            if issuer.crl_stale or latest is None or old:
                due.append(issuer.id)
    published = []
    for issuer_id in due:
        with uow_factory() as uow:
            issuer = uow.session.get(Issuer, issuer_id)
            assert issuer is not None
            try:
                record = publish_crl(uow, keys, issuer, now)
                uow.commit()
            except IntegrityError:
                uow.rollback()
                log.info("CRL of %s was published by another worker meanwhile", issuer_id)
                continue
            published.append((issuer_id, record.number))
    return published


def current_crl(uow: UnitOfWork, keys: KeyRing, issuer_id: str, now: datetime) -> Crl:
    """The CRL to serve for ``issuer_id``: the newest, built now if none is current."""
    issuer = uow.session.get(Issuer, issuer_id)
    if issuer is None:
        raise NotFound("no such issuer")
    latest = latest_crl(uow, issuer_id)
    if latest is not None and as_utc(latest.next_update) > now:
        return latest
    try:
        record = publish_crl(uow, keys, issuer, now)
        uow.commit()
        return record
    except IntegrityError:
        uow.rollback()  # a concurrent request published it: serve that one
        latest = latest_crl(uow, issuer_id)
        assert latest is not None
        return latest


# --- OCSP ----------------------------------------------------------------------------


def _certificate_state(uow: UnitOfWork, issuer_id: str,
                       serial: int) -> ocsp_answers.CertificateState:
    """Never "good" for a serial that was not issued: unknown unless issued or revoked."""
    record = uow.session.get(IssuedCertificate, format(serial, "x"))
    if record is None or record.issuer_id != issuer_id:
        return ocsp_answers.CertificateState("unknown")
    if record.status == "issued":
        return ocsp_answers.CertificateState("good")
    if record.status == "revoked" and record.revoked_at is not None:
        return ocsp_answers.CertificateState("revoked", as_utc(record.revoked_at),
                                             record.revocation_reason)
    return ocsp_answers.CertificateState("unknown")  # still signing, or refused


class _LazyKey:
    """An issuer's key, decrypted only when this issuer has to sign an answer."""

    def __init__(self, keys: KeyRing, issuer: Issuer):
        self._keys, self._issuer = keys, issuer

    def sign_ocsp_response(self, builder: Any) -> Any:
        return self._keys.key_for(self._issuer).sign_ocsp_response(builder)


def ocsp_answer(uow: UnitOfWork, keys: KeyRing, request_der: bytes,
                now: datetime) -> ocsp_answers.Answer:
    """Answer a DER OCSP request for any of our issuers, signed by that issuer."""
    issuers = [ocsp_answers.OcspIssuer(i.id, _certificate(i.certificate_pem),
                                       _LazyKey(keys, i))  # type: ignore[arg-type]
               for i in list_issuers(uow)]
    return ocsp_answers.respond(request_der, issuers,
                                lambda issuer_id, serial: _certificate_state(uow, issuer_id,
                                                                             serial), now)
