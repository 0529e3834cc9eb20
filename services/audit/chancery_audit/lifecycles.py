"""What each entry concerns, and when those things stop: the facts retention needs.

BR 5.4.3 keeps a subscriber certificate's records two years past the certificate's
expiry or revocation, and a CA key's records two years past its CA certificate. An
entry's own time is therefore not enough to know when it may go: audit learns, from the
messages it records anyway,

- which orders, subscriber certificates (serials), CAs (issuers) and domains (by name:
  their validations are certificate lifecycle records too, BR 5.4.1) each entry is
  about (``audit_entry_concerns``);
- each certificate's order, names, and when it stops being valid: ``not_after`` from
  ``ca_signer.certificate.issued``, ``revoked_at`` from ``ca_signer.certificate.revoked``
  (``audit_certificates``, ``audit_certificate_names``; a reissue is a new serial of the
  same order);
- orders that ended without a certificate: rejected, cancelled or failed
  (``audit_orders``);
- each CA certificate's ``not_after``, from ``ca_signer.issuer.created``
  (``audit_issuers``).

The same functions fill these tables from the entries already stored (the migration
that made them), so a log recorded before them is kept as it should be.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from chancery_audit.model import (
    CERTIFICATE,
    DOMAIN,
    ISSUER,
    ORDER,
    AuditCertificate,
    AuditCertificateName,
    AuditEntryConcern,
    AuditIssuer,
    AuditOrder,
    as_utc,
)

#: Payload fields naming a subscriber certificate, and one naming a list of them.
SERIAL_FIELDS = ("serial", "previous_serial")
SERIAL_LIST_FIELDS = ("serials", "revoked_serials")
#: Payload fields naming a CA, counted only for the CA's own messages (a certificate's
#: ``issuer_id`` says who signed it, not that the entry is about the CA's key).
ISSUER_FIELDS = ("issuer_id", "previous_issuer_id", "replaced_by")
#: How an order ends without ever having a certificate.
ENDED_WITHOUT_CERTIFICATE = frozenset({"orders.order.rejected", "orders.order.cancelled",
                                       "orders.order.failed"})

__all__ = ["ENDED_WITHOUT_CERTIFICATE", "certificate_name", "concerns_of", "learn"]


def certificate_name(name: str) -> str:
    """A certificate's name as a domain's would match it: lower case, no ``*.``."""
    name = name.strip().lower().rstrip(".")
    return name[2:] if name.startswith("*.") else name


def _about_a_ca(message_type: str) -> bool:
    return (message_type.startswith("ca_signer.")
            and not message_type.startswith("ca_signer.certificate."))


def concerns_of(message_type: str, data: Mapping[str, Any], subject_type: str,
                subject_id: str) -> set[tuple[str, str]]:
    """The orders, certificates and CAs a message is about, as ``(kind, ref)`` pairs:
    its subject when it is one of them, and the payload fields that name one."""

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    found: set[tuple[str, str]] = set()
    if subject_type in (ORDER, CERTIFICATE, ISSUER) and subject_id:
        found.add((subject_type, subject_id))
    if (order_id := text(data.get("order_id"))) is not None:
        found.add((ORDER, order_id))
    for name in SERIAL_FIELDS:
        if (serial := text(data.get(name))) is not None:
            found.add((CERTIFICATE, serial))
    for name in SERIAL_LIST_FIELDS:
        values = data.get(name)
        if isinstance(values, list):
            found.update((CERTIFICATE, s) for s in values if text(s) is not None)
    if message_type.startswith("orders.domain.") and (name := text(data.get("name"))):
        found.add((DOMAIN, certificate_name(name)))
    if _about_a_ca(message_type):
        for name in ISSUER_FIELDS:
            if (issuer_id := text(data.get(name))) is not None:
                found.add((ISSUER, issuer_id))
    return found


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _certificate(session: Session, serial: str) -> AuditCertificate:
    certificate = session.get(AuditCertificate, serial)
    if certificate is None:
        certificate = AuditCertificate(serial=serial)
        session.add(certificate)
    return certificate


def learn(session: Session, *, entry_id: str, message_type: str, account_id: str | None,
          at: datetime, data: Mapping[str, Any], subject_type: str, subject_id: str) -> None:
    """Note what the entry ``entry_id`` (of a message of ``message_type``) is about, and
    what its message says of a certificate's, an order's or a CA's life. The caller
    holds the entry's log locked, so two messages about one certificate (in one account)
    are never learnt at once."""
    concerns = concerns_of(message_type, data, subject_type, subject_id)
    session.add_all(AuditEntryConcern(entry_id=entry_id, kind=kind, ref=ref)
                    for kind, ref in sorted(concerns))
    serial, order_id = data.get("serial"), data.get("order_id")
    if message_type == "ca_signer.certificate.issued" and isinstance(serial, str):
        certificate = _certificate(session, serial)
        certificate.order_id = order_id if isinstance(order_id, str) else certificate.order_id
        certificate.account_id = account_id
        certificate.issuer_id = data.get("issuer_id")
        certificate.not_after = _time(data.get("not_after"))
        sans = data.get("sans") if isinstance(data.get("sans"), list) else []
        for name in sorted({certificate_name(n) for n in sans if isinstance(n, str) and n}):
            if session.get(AuditCertificateName, (serial, name)) is None:
                session.add(AuditCertificateName(serial=serial, name=name))
    elif message_type == "ca_signer.certificate.revoked" and isinstance(serial, str):
        revoked_at = _time(data.get("revoked_at")) or as_utc(at)
        certificate = _certificate(session, serial)
        if certificate.revoked_at is None or revoked_at < certificate.revoked_at:
            certificate.revoked_at = revoked_at
        certificate.account_id = certificate.account_id or account_id
    elif isinstance(serial, str) and serial and isinstance(order_id, str) and order_id:
        # orders' own messages (issued, reissued, expired…) also tie a serial to its order
        certificate = _certificate(session, serial)
        certificate.order_id = certificate.order_id or order_id
        certificate.account_id = certificate.account_id or account_id
    if message_type in ENDED_WITHOUT_CERTIFICATE and isinstance(order_id, str):
        if session.get(AuditOrder, order_id) is None:
            session.add(AuditOrder(order_id=order_id, account_id=account_id,
                                   ended_at=as_utc(at), ended_as=message_type))
    if message_type == "ca_signer.issuer.created" and isinstance(data.get("issuer_id"), str):
        not_after = _time(data.get("not_after"))
        if not_after is not None:
            issuer = session.get(AuditIssuer, data["issuer_id"])
            if issuer is None:
                session.add(AuditIssuer(issuer_id=data["issuer_id"], not_after=not_after))
            else:
                issuer.not_after = not_after


def learn_from_entries(session: Session, entries: Iterable[Any]) -> None:
    """``learn`` from stored entries (rows with ``id``, ``at``, ``account_id`` and
    ``envelope``), in the order given: the migration's backfill."""
    for row in entries:
        message = json.loads(row.envelope)
        subject = message.get("subject") or {}
        learn(session, entry_id=row.id, message_type=message.get("type", ""),
              account_id=row.account_id, at=as_utc(row.at), data=message.get("data") or {},
              subject_type=subject.get("type", ""), subject_id=subject.get("id", ""))
        session.flush()
