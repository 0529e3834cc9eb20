"""ca-signer's service layer: keep the CAs, sign what the registration authority approved.

The signer takes instructions only from orders (the registration authority), but trusts
nothing in them blindly: the CSR is parsed and its key checked again, the certificate is
built from the approved names (never from the CSR's subject), linted before it is
signed, and compared with what was linted after.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chancery_shared import br_schedule
from chancery_shared.mail import Mail, Mailer, MailNotSent
from chancery_shared.messaging.envelope import Actor, Context, Envelope, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.subscriber_keys import WEAK_KEY_RULES, DebianWeakKeys, spki_sha256
from chancery_shared.web.problems import InvalidField, NotFound
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from chancery_ca_signer import authorities
from chancery_ca_signer.keyring import KeyRing
from chancery_ca_signer.model import (
    BlockedKey,
    Crl,
    IssuedCertificate,
    Issuer,
    OcspResponder,
    OcspResponse,
    ProblemReport,
)
from chancery_ca_signer.pki import ocsp as ocsp_answers
from chancery_ca_signer.pki.crl import CRL_VALIDITY, REASON_FLAGS, RevokedEntry, build_crl
from chancery_ca_signer.pki.csr import CsrRejected, parse_csr
from chancery_ca_signer.pki.issuance import IssuanceRejected, issue_tls_certificate
from chancery_ca_signer.pki.keys import CaKey, CaKeyError, KeyType
from chancery_ca_signer.pki.profiles import Hierarchy, PrivateProfile, hierarchy_of
from chancery_ca_signer.pki.responder import (
    RESPONDER_RENEW_BEFORE,
    create_responder_certificate,
    responder_key_type,
)
from chancery_ca_signer.pki.urls import issuer_id as issuer_id_of

log = logging.getLogger(__name__)
SOURCE = "ca-signer"


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def create_development_hierarchy(uow: UnitOfWork, keys: KeyRing, public_base_url: str,
                                 private: PrivateProfile | None = None) -> bool:
    """First start: a public and a private hierarchy for development (each a root and an
    issuing CA); False if both exist."""
    created = authorities.development_hierarchy(uow, keys, public_base_url, utcnow(), private)
    if created:
        uow.commit()
    return created


def list_issuers(uow: UnitOfWork) -> list[Issuer]:
    return list(uow.session.execute(select(Issuer).order_by(Issuer.kind.desc(),
                                                            Issuer.created_at)).scalars())


def issuer_summaries(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Every CA with the profiles it signs (an unassigned profile goes to the newest
    active issuing CA of its hierarchy)."""
    issuers = list_issuers(uow)
    signs: dict[str, list[str]] = {}
    for profile in authorities.PROFILES:
        issuer = authorities.issuer_for_profile(uow, profile)
        if issuer is not None:
            signs.setdefault(issuer.id, []).append(profile)
    fields = ("id", "kind", "hierarchy", "parent_id", "subject", "not_before", "not_after",
              "active", "key_type", "key_backend", "revoked_at", "certificate_pem")
    return [{**{name: _aware(getattr(issuer, name)) for name in fields},
             "profiles": signs.get(issuer.id, [])} for issuer in issuers]


def _aware(value: Any) -> Any:
    """Times as the API promises them (RFC 3339, with an offset): SQLite, where the
    embedded mode keeps this model, hands ``DateTime(timezone=True)`` back naive."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def issuer_certificate_der(uow: UnitOfWork, issuer_id: str) -> bytes:
    issuer = uow.session.get(Issuer, issuer_id)
    if issuer is None:
        raise NotFound("no such issuer")
    return x509.load_pem_x509_certificate(issuer.certificate_pem.encode()).public_bytes(
        serialization.Encoding.DER)


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
                       reason: str, findings: list[dict[str, Any]],
                       **extra: Any) -> None:
    uow.event("ca_signer.certificate.rejected", context, subject=("order", order_id),
              summary=f"ca-signer refused to sign order {order_id}: {reason}",
              data={"order_id": order_id, "issuance_id": issuance_id, "reason": reason,
                    "lint_findings": findings, **extra})


#: Public profiles whose subject names an organization: its evidence is needed too.
ORGANIZATION_PROFILES = frozenset({"ov", "ev"})


@dataclass(frozen=True)
class StaleEvidence:
    """Why a signing command's evidence cannot back a certificate signed today."""

    names: list[str]
    organization: bool

    def reason(self, at: datetime) -> str:
        parts = []
        if self.names:
            parts.append(f"no domain validation reusable on {at.date().isoformat()} "
                         f"({br_schedule.max_validation_reuse_days(at)} days, BR 4.2.1) "
                         f"covers {', '.join(self.names)}")
        if self.organization:
            parts.append("the organization's validation is older than "
                         f"{br_schedule.max_validation_reuse_days(at, br_schedule.ORGANIZATION)}"
                         " days")
        return "; ".join(parts)


def stale_evidence(data: dict[str, Any], at: datetime) -> StaleEvidence | None:
    """The last line for BR 4.2.1: every name of a public certificate must rest on a
    domain validation, and an OV/EV subject on an organization validation, reusable at
    ``at``, the moment of signing (None when it does)."""
    try:
        public = hierarchy_of(data["profile"]) is Hierarchy.PUBLIC
    except ValueError:
        public = False  # an unknown profile is refused by issuer selection already
    if not public:
        return None  # a private profile: the BR do not govern it
    fresh_names: set[str] = set()
    organization_fresh = False
    for used in data.get("validations") or []:
        try:
            validated_at = datetime.fromisoformat(used["validated_at"])
            reusable = br_schedule.validation_reusable(validated_at, at, used["kind"])
        except (KeyError, TypeError, ValueError):
            continue  # unreadable evidence backs nothing
        if not reusable:
            continue
        if used["kind"] == br_schedule.DOMAIN:
            fresh_names.update(used.get("names") or [])
        else:
            organization_fresh = True
    names = [name for name in data["sans"] if name not in fresh_names]
    organization = data["profile"] in ORGANIZATION_PROFILES and not organization_fresh
    if names or organization:
        return StaleEvidence(names, organization)
    return None


def sign_certificate(envelope: Envelope, uow: UnitOfWork, keys: KeyRing,
                     public_base_url: str, now: datetime | None = None, *,
                     curves: frozenset[str] | None = None,
                     private: PrivateProfile | None = None,
                     debian_weak_keys: DebianWeakKeys | None = None) -> None:
    """Handle ``ca_signer.certificate.sign``: exactly one certificate per issuance id.
    ``curves``: the ECDSA curves subscriber keys may use (all three when None);
    ``private``: the operator's private-profile settings (defaults when None). The
    profile is signed only by an issuing CA of its own hierarchy."""
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
    try:
        issuer = (uow.session.get(Issuer, record.issuer_id) if record is not None
                  else authorities.signing_ca(uow, data["profile"]))
    except authorities.NoIssuingCa as exc:
        _announce_rejected(uow, context, order_id, issuance_id, str(exc), [])
        return
    signing_at = now or utcnow()  # when the CA key signs (a retry signs now, too)
    stale = stale_evidence(data, signing_at)
    if stale is not None:
        _announce_rejected(uow, context, order_id, issuance_id, stale.reason(signing_at), [],
                           code="validation_expired", names=stale.names,
                           organization=stale.organization)
        return
    private = private or PrivateProfile()
    try:
        csr = parse_csr(data["csr_pem"], is_key_blocked=functools.partial(is_key_blocked, uow),
                        allowed_curves=curves, debian_weak_keys=debian_weak_keys)
    except CsrRejected as exc:
        reason = (f"key_blocked ({exc.rule}): {exc.reason}" if exc.rule in WEAK_KEY_RULES
                  else exc.reason)
        _announce_rejected(uow, context, order_id, issuance_id, reason, [])
        return
    if record is None:
        # Record the intent (serial reserved) durably before any signature exists.
        record = IssuedCertificate(
            serial=format(x509.random_serial_number(), "x"), issuance_id=issuance_id,
            order_id=order_id, account_id=envelope.account_id, issuer_id=issuer.id,
            profile=data["profile"], status="signing", sans=list(data["sans"]),
            spki_sha256=csr.spki_sha256)
        uow.session.add(record)
        try:
            uow.session.commit()
        except IntegrityError:
            uow.session.rollback()
            raise  # a competing worker took this issuance: retry finds its record
    subject = data.get("subject") or {}
    organization = {k: v for k, v in subject.items() if k != "common_name"}
    requested = data.get("not_after")
    if record.tbs_der is not None and record.not_before is not None:
        # A retry after a crash between the intent and the signature: build the same
        # certificate again (same serial, same notBefore), so what is signed is what
        # was recorded and linted.
        now = as_utc(record.not_before)

    def record_intent(linted: x509.Certificate) -> None:
        """The to-be-signed certificate is durable before the CA key signs it."""
        if record.tbs_der is not None and record.tbs_der != linted.tbs_certificate_bytes:
            log.warning("issuance %s: the retried certificate differs from the recorded "
                        "intent (the issuer changed?); recording the new one", issuance_id)
        record.tbs_der = linted.tbs_certificate_bytes
        record.not_before = linted.not_valid_before_utc
        record.not_after = linted.not_valid_after_utc
        uow.session.commit()

    try:
        issued = issue_tls_certificate(
            _certificate(issuer.certificate_pem),
            keys.key_for(issuer), csr, list(data["sans"]), data["profile"], organization or None,
            now or utcnow(), datetime.fromisoformat(requested) if requested else None,
            private.url_base(public_base_url) if issuer.hierarchy == Hierarchy.PRIVATE
            else public_base_url, serial=int(record.serial, 16), include_common_name=False,
            private=private, issuer_hierarchy=issuer.hierarchy, before_signing=record_intent)
    except IssuanceRejected as exc:
        findings = [f.as_dict() for f in exc.findings]
        record.status, record.rejection_reason, record.lint_findings = "rejected", exc.reason, \
            findings
        _announce_rejected(uow, context, order_id, issuance_id, exc.reason, findings)
        return
    if issued.certificate.tbs_certificate_bytes != record.tbs_der:
        raise RuntimeError(f"issuance {issuance_id}: the signed certificate is not the "
                           "recorded intent; nothing is announced")
    record.status = "issued"
    record.certificate_pem = issued.pem
    record.not_before, record.not_after = issued.not_before, issued.not_after
    record.lint_findings = [f.as_dict() for f in issued.lint_findings]
    _announce_issued(uow, context, record, issuer)


def is_key_blocked(uow: UnitOfWork, spki: str) -> bool:
    """Is the key (its SPKI SHA-256) on the blocklist of compromised keys?"""
    return uow.session.get(BlockedKey, spki) is not None


def block_key(uow: UnitOfWork, context: Context, spki: str, reason: str, *, source: str,
              serial: str | None = None, account_id: str | None = None) -> bool:
    """Put a key on the blocklist and announce it (``ca_signer.key.blocked``); False when
    it was there already. The caller commits."""
    if is_key_blocked(uow, spki):
        return False
    uow.session.add(BlockedKey(spki_sha256=spki, reason=reason, source=source, serial=serial,
                               account_id=account_id, blocked_at=utcnow()))
    uow.event("ca_signer.key.blocked", context, subject=("key", spki),
              summary=f"ca-signer blocked the key {spki[:16]}… ({reason}"
                      + (f", certificate {serial})" if serial else ")")
                      + "; no certificate will be issued for it again",
              data={"spki_sha256": spki, "reason": reason, "source": source,
                    "serial": serial})
    return True


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
    record_revocation(uow, context, record, reason, now or utcnow(),
                      correlation_id=envelope.correlation_id)


def record_revocation(uow: UnitOfWork, context: Context, record: IssuedCertificate,
                      reason: str, now: datetime, *, correlation_id: str | None = None) -> None:
    """Revoke ``record`` once (a revoked one keeps its first date and reason) and say so;
    a ``key_compromise`` revocation also blocklists the key. The caller commits."""
    serial = record.serial
    already = record.status == "revoked"
    if not already:
        record.status = "revoked"
        record.revoked_at = now.replace(microsecond=0)
        record.revocation_reason = reason
        issuer = uow.session.get(Issuer, record.issuer_id)
        if issuer is not None:
            issuer.crl_stale = True  # the CRL job republishes it within its check interval
        # a cached "good" answer must not outlive the revocation
        uow.session.execute(delete(OcspResponse).where(
            OcspResponse.issuer_id == record.issuer_id, OcspResponse.serial == serial))
    if reason == "key_compromise" and record.certificate_pem:
        # the key is compromised whatever the certificate was first revoked for
        certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode())
        block_key(uow, context.with_account(record.account_id),
                  spki_sha256(certificate.public_key()), "key_compromise",
                  source="revocation", serial=serial, account_id=record.account_id)
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
              correlation_id=correlation_id or record.order_id)


# --- certificate problem reports (BR 4.9.3) ---------------------------------------------

#: The subject a key-compromise report's CSR must carry: signing this exact request
#: proves possession of the key now, and no CSR made for another purpose can be replayed.
COMPROMISE_CHALLENGE = "Chancery key compromise report"
PROBLEM_KINDS = ("key_compromise", "misuse", "other")


def report_problem(uow: UnitOfWork, context: Context, kind: str, *, now: datetime,
                   csr_pem: str | None = None, message: str | None = None,
                   email: str | None = None, serial: str | None = None,
                   ip: str | None = None) -> ProblemReport:
    """Record a problem report. A key compromise proven by ``csr_pem`` (signed by the key,
    subject ``CN=`` :data:`COMPROMISE_CHALLENGE`) blocklists the key and revokes every
    unexpired certificate for it now; other reports wait for the operator."""
    report = ProblemReport(id=str(uuid.uuid4()), kind=kind, status="open",
                           reporter_email=email, message=message,
                           serial=serial.lower() if serial else None, reporter_ip=ip,
                           revoked_serials=[], created_at=now)
    if kind == "key_compromise":
        if not csr_pem:
            raise InvalidField("csr", "a key compromise is proven with a CSR signed by the "
                                      f"key, with the subject CN={COMPROMISE_CHALLENGE}")
        spki = _proven_key(csr_pem)
        report.spki_sha256, report.status = spki, "resolved"
        block_key(uow, context, spki, "key_compromise", source="problem_report")
        records = uow.session.execute(select(IssuedCertificate).where(
            IssuedCertificate.spki_sha256 == spki, IssuedCertificate.status == "issued",
            IssuedCertificate.not_after > now).order_by(IssuedCertificate.created_at)
            .with_for_update()).scalars().all()
        for record in records:
            record_revocation(uow, context, record, "key_compromise", now)
        report.revoked_serials = [record.serial for record in records]
    elif not message:
        raise InvalidField("message", "say what is wrong (which certificate, what you saw)")
    uow.session.add(report)
    summary = (f"a key compromise was reported with proof of possession: key "
               f"{report.spki_sha256[:16]}… blocked, {len(report.revoked_serials)} "
               f"certificate(s) revoked" if kind == "key_compromise"
               else f"a certificate problem report ({kind}) awaits the operator")
    uow.event("ca_signer.problem.reported", context, subject=("problem_report", report.id),
              summary=summary,
              data={"report_id": report.id, "kind": kind, "status": report.status,
                    "serial": report.serial, "spki_sha256": report.spki_sha256,
                    "revoked_serials": report.revoked_serials})
    uow.commit()
    return report


def _proven_key(csr_pem: str) -> str:
    """The SPKI SHA-256 of the key that signed the report's CSR, or 422 naming ``csr``."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.strip().encode("utf-8", "replace"))
        signed = csr.is_signature_valid
        names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidField("csr", "is not a PEM certificate signing request") from None
    if not signed:
        raise InvalidField("csr", "has a signature that does not verify: it does not prove "
                                  "possession of the key")
    if names != [COMPROMISE_CHALLENGE]:
        raise InvalidField("csr", f"must have the subject CN={COMPROMISE_CHALLENGE} (and "
                                  "nothing else), so it cannot be an old request replayed")
    return spki_sha256(public_key)


def notify_operator(uow_factory: Callable[[], UnitOfWork], mailer: Mailer,
                    operators: Sequence[str], now: datetime, batch: int = 20) -> list[str]:
    """Mail the operator about each problem report not yet mailed (every kind: a proven
    compromise was handled on arrival, but the operator should know). One report per
    transaction, locked while its mail goes out, so two workers never both send it; a
    mail that fails stays pending for the next pass. Returns the reports mailed."""
    mailed = []
    for _ in range(batch):
        with uow_factory() as uow:
            report = uow.session.execute(
                select(ProblemReport).where(ProblemReport.operator_notified_at.is_(None))
                .order_by(ProblemReport.created_at).limit(1)
                .with_for_update(skip_locked=True)).scalar_one_or_none()
            if report is None:
                break
            try:
                mailer.send(problem_report_mail(report, operators))
            except MailNotSent as exc:
                log.warning("could not mail problem report %s to the operator: %s",
                            report.id, exc)
                break
            report.operator_notified_at = now
            uow.commit()
            mailed.append(report.id)
    return mailed


def problem_report_mail(report: ProblemReport, operators: Sequence[str]) -> Mail:
    """What the operator reads: the kind, what happened already, and what is asked."""
    if report.kind == "key_compromise":
        subject = (f"Key compromise reported and handled: {len(report.revoked_serials)} "
                   "certificate(s) revoked")
        handled = [f"The key {report.spki_sha256} was proven compromised (a CSR signed by "
                   "it) and is blocked for every account.",
                   "Revoked at once: " + (", ".join(report.revoked_serials) or "nothing "
                                          "(no unexpired certificate had this key)")]
    else:
        subject = f"Certificate problem report ({report.kind}): action needed within 24 hours"
        handled = ["Nothing was done automatically. BR 4.9.5: investigate and give the "
                   "reporter a preliminary report within 24 hours."]
    lines = [f"Report:    {report.id}", f"Kind:      {report.kind}",
             f"Received:  {report.created_at.isoformat()}",
             f"Serial:    {report.serial or '-'}",
             f"Reporter:  {report.reporter_email or '(no address given)'}"
             f" from {report.reporter_ip or '?'}",
             "", *handled, ""]
    if report.message:
        lines += ["Message:", report.message, ""]
    lines.append("All reports: GET /api/ca/v1/problem-reports")
    return Mail(to=tuple(operators), subject=subject, body="\n".join(lines) + "\n")


def problem_reports(uow: UnitOfWork, limit: int) -> list[ProblemReport]:
    return list(uow.session.execute(select(ProblemReport).order_by(
        ProblemReport.created_at.desc()).limit(limit)).scalars())


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


def _crl_entries(uow: UnitOfWork, issuer: Issuer) -> list[RevokedEntry]:
    """What ``issuer``'s CRL lists: its revoked certificates, or for a root its revoked
    issuing CAs."""
    if issuer.kind == "root":
        children = uow.session.execute(select(Issuer).where(
            Issuer.parent_id == issuer.id, Issuer.revoked_at.is_not(None))).scalars()
        return [RevokedEntry(_certificate(child.certificate_pem).serial_number,
                             as_utc(child.revoked_at),  # type: ignore[arg-type]
                             child.revocation_reason if child.revocation_reason in REASON_FLAGS
                             else "unspecified")
                for child in children]
    rows = uow.session.execute(
        select(IssuedCertificate.serial, IssuedCertificate.revoked_at,
               IssuedCertificate.revocation_reason)
        .where(IssuedCertificate.issuer_id == issuer.id, IssuedCertificate.status == "revoked")
        .order_by(IssuedCertificate.revoked_at)).all()
    return [RevokedEntry(int(serial, 16), as_utc(revoked_at),
                         reason if reason in REASON_FLAGS else "unspecified")
            for serial, revoked_at, reason in rows]


def publish_crl(uow: UnitOfWork, keys: KeyRing | None, issuer: Issuer, now: datetime, *,
                key: CaKey | None = None, validity: timedelta = CRL_VALIDITY,
                context: Context | None = None) -> Crl:
    """Build, sign, store and announce the next CRL of ``issuer``; the caller commits.

    Signed with ``key`` when given (``chancery-ca`` bringing an offline root's key), else
    with the issuer's key from ``keys``. The number is one more than the last, and two
    workers publishing at once collide on the (issuer, number) key instead of both
    succeeding.
    """
    entries = _crl_entries(uow, issuer)
    last = uow.session.execute(select(func.max(Crl.number))
                               .where(Crl.issuer_id == issuer.id)).scalar()
    number = (last or 0) + 1
    this_update = now.replace(microsecond=0)
    if key is None:
        assert keys is not None
        key = keys.key_for(issuer)
    signed = build_crl(_certificate(issuer.certificate_pem), key, entries, number, this_update,
                       this_update + validity)
    record = Crl(issuer_id=issuer.id, number=number, this_update=this_update,
                 next_update=this_update + validity, entries=len(entries),
                 der=signed.public_bytes(serialization.Encoding.DER))
    uow.session.add(record)
    uow.session.execute(delete(Crl).where(Crl.issuer_id == issuer.id,
                                          Crl.number <= number - KEPT_CRLS))
    issuer.crl_stale = False
    uow.event("ca_signer.crl.published",
              context or Context(actor=Actor.service("ca-signer"), account_id=None),
              subject=("issuer", issuer.id),
              summary=f"ca-signer published CRL number {number} of {issuer.subject} "
                      f"listing {len(entries)} revoked certificate(s)",
              data={"issuer_id": issuer.id, "number": number, "entries": len(entries)})
    return record


#: Warn this long before an offline root's CRL runs out (someone must bring the root key).
ROOT_CRL_WARNING = timedelta(days=30)


def publish_due_crls(uow_factory: Callable[[], UnitOfWork], keys: KeyRing,
                     now: datetime) -> list[tuple[str, int]]:
    """Republish each unexpired issuer's CRL that a revocation made stale or that is a day old.

    Each issuer is its own transaction; one that another worker published meanwhile is
    skipped. An offline root is only checked: its CRL is signed by ``chancery-ca``, and a
    warning is logged daily from 30 days before it runs out. Returns (issuer id, CRL
    number) of each publication.
    """
    with uow_factory() as uow:
        due = []
        for issuer in list_issuers(uow):
            if as_utc(issuer.not_after) <= now:
                continue
            latest = latest_crl(uow, issuer.id)
            if not keys.has_online_key(issuer):
                if latest is None or as_utc(latest.next_update) <= now + ROOT_CRL_WARNING:
                    log.warning("the CRL of offline CA %s %s; sign a new one with "
                                "`chancery-ca sign-root-crl`", issuer.id,
                                "is missing" if latest is None else
                                f"runs out at {isoformat(as_utc(latest.next_update))}")
                continue
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
    """The CRL to serve for ``issuer_id``: the newest, built now if none is current.

    An offline root's CRL cannot be built here: its newest one is served (the CRL job
    warns well before it runs out).
    """
    issuer = uow.session.get(Issuer, issuer_id)
    if issuer is None:
        raise NotFound("no such issuer")
    latest = latest_crl(uow, issuer_id)
    if latest is not None and (as_utc(latest.next_update) > now
                               or not keys.has_online_key(issuer)):
        return latest
    if not keys.has_online_key(issuer):
        raise NotFound("no CRL has been published for this issuer yet")
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

#: A cached answer is re-signed once it is this old (answers are valid OCSP_VALIDITY,
#: 4 days): clients and HTTP caches always get one with days left.
OCSP_REFRESH_AFTER = timedelta(days=1)


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


def create_ocsp_responder(uow: UnitOfWork, keys: KeyRing, issuer: Issuer,
                          now: datetime) -> OcspResponder:
    """A new delegated responder for ``issuer``: a fresh software key and a certificate
    the issuer signs (the one use of the CA key for OCSP). The caller commits."""
    key = keys.new_software_key(responder_key_type(KeyType(issuer.key_type or KeyType
                                                           .from_public_key(_certificate(
                                                               issuer.certificate_pem)
                                                               .public_key()))))
    cert = create_responder_certificate(_certificate(issuer.certificate_pem),
                                        keys.key_for(issuer), key.public_key(), now=now)
    responder = OcspResponder(id=issuer_id_of(cert), issuer_id=issuer.id,
                              certificate_pem=_pem(cert),
                              encrypted_key_pem=key.encrypted_pem.decode(),
                              not_before=cert.not_valid_before_utc,
                              not_after=cert.not_valid_after_utc)
    uow.session.add(responder)
    uow.event("ca_signer.ocsp_responder.created",
              Context(actor=Actor.service("ca-signer"), account_id=None),
              subject=("issuer", issuer.id),
              summary=f"ca-signer issued a new OCSP responder certificate for "
                      f"{issuer.subject}, valid until {isoformat(cert.not_valid_after_utc)}",
              data={"issuer_id": issuer.id, "responder_id": responder.id,
                    "not_after": isoformat(cert.not_valid_after_utc)})
    return responder


def _current_responder(uow: UnitOfWork, issuer_id: str, now: datetime,
                       margin: timedelta) -> OcspResponder | None:
    """The newest responder of the issuer still valid ``margin`` from now."""
    return uow.session.execute(
        select(OcspResponder).where(OcspResponder.issuer_id == issuer_id,
                                    OcspResponder.not_after > now + margin,
                                    OcspResponder.not_before <= now)
        .order_by(OcspResponder.not_after.desc()).limit(1)).scalar_one_or_none()


def renew_ocsp_responders(uow_factory: Callable[[], UnitOfWork], keys: KeyRing,
                          now: datetime) -> list[str]:
    """Give each issuing CA that can sign a responder valid for RESPONDER_RENEW_BEFORE
    more; returns the issuers that got a new one."""
    with uow_factory() as uow:
        due = [issuer.id for issuer in list_issuers(uow)
               if issuer.kind == "issuing" and keys.has_online_key(issuer)
               and issuer.revoked_at is None and as_utc(issuer.not_after) > now
               and _current_responder(uow, issuer.id, now, RESPONDER_RENEW_BEFORE) is None]
    renewed = []
    for issuer_id in due:
        with uow_factory() as uow:
            issuer = uow.session.get(Issuer, issuer_id)
            assert issuer is not None
            create_ocsp_responder(uow, keys, issuer, now)
            uow.commit()
            renewed.append(issuer_id)
    return renewed


@functools.lru_cache(maxsize=32)
def _ocsp_issuer(issuer_id: str, certificate_pem: str) -> ocsp_answers.OcspIssuer:
    return ocsp_answers.OcspIssuer(issuer_id, _certificate(certificate_pem))


def _ocsp_issuers(uow: UnitOfWork) -> list[ocsp_answers.OcspIssuer]:
    rows = uow.session.execute(select(Issuer.id, Issuer.certificate_pem)).all()
    return [_ocsp_issuer(issuer_id, pem) for issuer_id, pem in rows]


def _signer(uow: UnitOfWork, keys: KeyRing, issuer: Issuer,
            now: datetime) -> ocsp_answers.Responder | None:
    """Who signs the issuer's answers: its delegated responder (made on the spot if it
    has none valid past the answer's nextUpdate), or None if the issuer cannot sign."""
    row = _current_responder(uow, issuer.id, now, ocsp_answers.OCSP_VALIDITY)
    if row is None:
        if not keys.has_online_key(issuer) or issuer.kind != "issuing":
            return None
        row = create_ocsp_responder(uow, keys, issuer, now)
    return ocsp_answers.Responder(_certificate(row.certificate_pem), keys.key_for(row))


def ocsp_answer(uow: UnitOfWork, keys: KeyRing, request_der: bytes,
                now: datetime) -> ocsp_answers.Answer:
    """Answer a DER OCSP request for any of our issuing CAs, signed by its responder.

    A good or revoked answer is kept and served again until it is OCSP_REFRESH_AFTER
    old; a revocation drops it. Requests about an offline root get ``unauthorized``
    (its issuing CAs' status is on the root CRL).
    """
    unsuccessful = ocsp_answers.error_response
    try:
        request = ocsp_answers.parse_request(request_der)
        found = ocsp_answers.find_issuer(request, _ocsp_issuers(uow))
    except ocsp_answers.MalformedRequest:
        return ocsp_answers.Answer(unsuccessful(ocsp_answers.ocsp.OCSPResponseStatus
                                                .MALFORMED_REQUEST))
    if found is None:
        return ocsp_answers.Answer(unsuccessful(ocsp_answers.ocsp.OCSPResponseStatus
                                                .UNAUTHORIZED))
    key = (found.id, format(request.serial_number, "x"), request.hash_algorithm.name)
    cached = uow.session.get(OcspResponse, key)
    if cached is not None and as_utc(cached.this_update) > now - OCSP_REFRESH_AFTER:
        return ocsp_answers.Answer(cached.der, as_utc(cached.next_update),
                                   as_utc(cached.this_update), cached.status)
    issuer = uow.session.get(Issuer, found.id)
    assert issuer is not None
    try:
        responder = _signer(uow, keys, issuer, now)
    except CaKeyError:
        log.exception("cannot sign OCSP answers for %s", issuer.id)
        responder = None
    if responder is None:
        return ocsp_answers.Answer(unsuccessful(ocsp_answers.ocsp.OCSPResponseStatus
                                                .UNAUTHORIZED))
    state = _certificate_state(uow, found.id, request.serial_number)
    answer = ocsp_answers.sign_answer(
        request, ocsp_answers.OcspIssuer(found.id, found.certificate, responder=responder),
        state, now)
    if state.status in ("good", "revoked"):
        if cached is None:
            cached = OcspResponse(issuer_id=key[0], serial=key[1], hash_algorithm=key[2])
            uow.session.add(cached)
        cached.status, cached.der = state.status, answer.der
        cached.this_update = now.replace(microsecond=0)
        cached.next_update = answer.next_update
    try:
        uow.commit()
    except IntegrityError:
        uow.rollback()  # another worker stored the same answer meanwhile: ours is as good
    return answer
