"""Certificate revocation lists (RFC 5280 section 5), built fast enough for large CAs.

cryptography's ``CertificateRevocationListBuilder.add_revoked_certificate`` copies the
whole entry list on every call (quadratic), and even building 100,000
``RevokedCertificate`` objects one by one through ``RevokedCertificateBuilder`` costs
most of a second. So the entries are DER-encoded here directly (they are tiny and fixed
in shape: serial, revocation date, optional reason), wrapped in an unsigned placeholder
list which cryptography parses back into ``RevokedCertificate`` objects, and those are
handed to the builder in one go. The real list is then built and signed by the CA key
(``CaKey.sign_crl``) like any other: the placeholder is never published.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from chancery_ca_signer.pki.keys import CaKey

__all__ = ["REASON_FLAGS", "RevokedEntry", "CRL_VALIDITY", "revoked_certificates", "build_crl"]

#: nextUpdate - thisUpdate. BR 4.9.7: at most 10 days; we publish at least daily.
CRL_VALIDITY = timedelta(days=7)

#: Our reason names (RFC 5280 CRLReason in snake_case) to cryptography's flags.
#: ``unspecified`` has no flag: RFC 5280 5.3.1 and the BR say to omit the extension.
REASON_FLAGS: dict[str, x509.ReasonFlags | None] = {
    "unspecified": None,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aa_compromise": x509.ReasonFlags.aa_compromise,
}

#: RFC 5280 CRLReason ENUMERATED values.
_REASON_CODES = {"key_compromise": 1, "ca_compromise": 2, "affiliation_changed": 3,
                 "superseded": 4, "cessation_of_operation": 5, "certificate_hold": 6,
                 "privilege_withdrawn": 9, "aa_compromise": 10}


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate as the CRL lists it."""

    serial: int
    revoked_at: datetime
    reason: str = "unspecified"


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _length(len(body)) + body


def _integer(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=False))


def _time(moment: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 (no strftime: slow)."""
    if moment.tzinfo is not None and moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    fields = (moment.month, moment.day, moment.hour, moment.minute, moment.second)
    if moment.year < 2050:
        return b"\x17\x0d" + b"%02d%02d%02d%02d%02d%02dZ" % (moment.year % 100, *fields)
    return b"\x18\x0f" + b"%04d%02d%02d%02d%02d%02dZ" % (moment.year, *fields)


def _reason_extensions(reason: str) -> bytes:
    code = _REASON_CODES.get(reason)
    if code is None:
        return b""
    # crlEntryExtensions: SEQUENCE { SEQUENCE { OID 2.5.29.21, OCTET STRING { ENUMERATED } } }
    return _tlv(0x30, _tlv(0x30, b"\x06\x03\x55\x1d\x15" + _tlv(0x04, b"\x0a\x01" +
                                                                bytes((code,)))))


def revoked_certificates(entries: Iterable[RevokedEntry]) -> list[x509.RevokedCertificate]:
    """``RevokedCertificate`` objects for ``entries``, in linear time (see the module doc)."""
    reasons = {name: _reason_extensions(name) for name in REASON_FLAGS}
    tails: dict[tuple[datetime, str], bytes] = {}  # encoded date and reason, shared
    parts: list[bytes] = []
    append = parts.append
    for entry in entries:  # the hot loop: kept flat on purpose
        serial = entry.serial
        key = (entry.revoked_at, entry.reason)
        tail = tails.get(key)
        if tail is None:
            if entry.reason not in reasons:
                raise ValueError(f"unknown revocation reason {entry.reason!r}")
            tail = tails[key] = _time(entry.revoked_at) + reasons[entry.reason]
        if serial <= 0:
            raise ValueError("a serial number must be positive")
        raw = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
        size = 2 + len(raw) + len(tail)
        if size < 0x80:  # always, for RFC 5280 serials (at most 20 octets): inline it
            append(bytes((0x30, size, 0x02, len(raw))) + raw + tail)
        else:
            append(_tlv(0x30, _integer(serial) + tail))
    body = b"".join(parts)
    if not body:
        return []
    epoch = _time(datetime(2000, 1, 1, tzinfo=UTC))
    algorithm = _tlv(0x30, b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02")  # ecdsa-with-SHA256
    tbs = _tlv(0x30, b"\x02\x01\x01" + algorithm + _tlv(0x30, b"") + epoch + epoch +
               _tlv(0x30, body))
    placeholder = _tlv(0x30, tbs + algorithm + b"\x03\x01\x00")
    # 100,000 new objects would set off the cyclic collector many times over, for nothing:
    # these objects hold no cycles.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return list(x509.load_der_x509_crl(placeholder))
    finally:
        if collecting:
            gc.enable()


def build_crl(issuer: x509.Certificate, key: CaKey, entries: Iterable[RevokedEntry],
              number: int, this_update: datetime,
              next_update: datetime | None = None) -> x509.CertificateRevocationList:
    """The signed CRL of ``issuer``: CRL number and authority key identifier extensions."""
    if not key.matches(issuer):
        raise ValueError("the key does not belong to the issuer certificate")
    try:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject, last_update=this_update,
        next_update=next_update or this_update + CRL_VALIDITY,
        extensions=[x509.Extension(x509.oid.ExtensionOID.CRL_NUMBER, False,
                                   x509.CRLNumber(number)),
                    x509.Extension(x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, aki)],
        revoked_certificates=revoked_certificates(entries))
    return key.sign_crl(builder)
