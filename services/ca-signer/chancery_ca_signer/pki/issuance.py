"""Issue a subscriber TLS certificate: cap validity, build, lint, sign, verify.

This is the one entry point the signing worker calls once orders (the RA) has decided
a certificate may be issued. Every refusal is an :class:`IssuanceRejected` naming the
field at fault and carrying pkilint's findings when linting refused, so the worker can
emit a failure event and release the reservation. Nothing is signed by the CA key
unless the exact to-be-signed bytes passed pre-issuance linting.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .csr import CsrInfo, CsrRejected, check_subscriber_public_key, spki_sha256
from .keys import CaKey
from .lint import (
    LintFinding,
    LintRejected,
    SigningMismatch,
    lint_subscriber_certificate,
    lint_then_sign,
)
from .profiles import (
    Hierarchy,
    PrivateProfile,
    SubjectFields,
    ValidationLevel,
    build_subject,
    build_tls_server_certificate,
    hierarchy_of,
    new_serial_number,
)
from .urls import normalise_base_url
from .validity import cap_not_after, truncate_to_seconds

__all__ = ["IssuedCertificate", "IssuanceRejected", "issue_tls_certificate", "build_chain_pem"]


class IssuanceRejected(Exception):
    """The certificate was not issued. ``reason`` is user-presentable; ``field`` names the input."""

    def __init__(
        self,
        reason: str,
        findings: Sequence[LintFinding] = (),
        field: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.findings = tuple(findings)
        self.field = field

    def __repr__(self) -> str:
        return (
            f"IssuanceRejected(reason={self.reason!r}, field={self.field!r}, "
            f"findings={len(self.findings)})"
        )


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate plus what ca-signer records and publishes about it."""

    serial: int
    der: bytes
    pem: str
    not_before: _dt.datetime
    not_after: _dt.datetime
    lint_findings: tuple[LintFinding, ...]  # non-blocking (WARNING/NOTICE) findings
    certificate: x509.Certificate

    @property
    def serial_hex(self) -> str:
        """Serial as lower-case hex, the usual form in URLs, CRL tooling and events."""
        return format(self.serial, "x")


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise IssuanceRejected("names must be a list of DNS names", field="names")
    result: dict[str, None] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise IssuanceRejected("every name must be a non-empty string", field="names")
        if not name.isascii() or name != name.lower() or name.endswith(".") or " " in name:
            raise IssuanceRejected(
                f"name {name!r} is not normalised (lower-case A-labels, no trailing dot)",
                field="names",
            )
        result.setdefault(name, None)
    return list(result)


def _check_ips(ip_addresses: Sequence[str]) -> list[str]:
    result: dict[str, None] = {}
    for ip in ip_addresses:
        try:
            result.setdefault(str(ipaddress.ip_address(ip)), None)
        except ValueError:
            raise IssuanceRejected(f"{ip!r} is not an IP address", field="ip_addresses") from None
    return list(result)


def issue_tls_certificate(
    issuer: x509.Certificate,
    ca_key: CaKey,
    csr_info: CsrInfo,
    names: Sequence[str],
    level: ValidationLevel | str,
    subject_fields: SubjectFields | Mapping[str, str | None] | None,
    now: _dt.datetime,
    requested_not_after: _dt.datetime | None,
    public_base_url: str,
    *,
    ip_addresses: Sequence[str] = (),
    serial: int | None = None,
    include_common_name: bool = False,
    private: PrivateProfile | None = None,
    issuer_hierarchy: Hierarchy | str | None = None,
    rsa_key_encipherment: bool = False,
    before_signing: Callable[[x509.Certificate], None] | None = None,
) -> IssuedCertificate:
    """Issue a TLS server certificate for ``names`` with the key of ``csr_info``.

    ``names`` are the approved dNSNames (already normalised by orders); the CSR's own
    names are informational. notBefore is ``now``; notAfter is ``requested_not_after``
    (``None`` = the maximum) cut to the BR maximum for ``now`` and to the issuer's expiry.
    Raises :class:`IssuanceRejected` on any problem, with pkilint findings if linting refused.
    ``before_signing`` is called with the linted (throwaway-signed) certificate just
    before the CA key signs the same to-be-signed bytes.
    ``private``: the operator's private-profile settings (policy OID, validity cap),
    used for ``private`` certificates. ``issuer_hierarchy``: the hierarchy ``issuer``
    belongs to; a level of the other hierarchy is refused before anything is built.
    """
    try:
        level = ValidationLevel(level)
    except ValueError:
        raise IssuanceRejected(f"unknown validation level {level!r}", field="level") from None
    private = private or PrivateProfile()
    if issuer_hierarchy is not None and Hierarchy(issuer_hierarchy) is not hierarchy_of(level):
        raise IssuanceRejected(
            f"a {level.value} certificate is signed only by a {hierarchy_of(level).value} "
            f"issuing CA, and this one is {Hierarchy(issuer_hierarchy).value}",
            field="issuer",
        )
    try:
        base_url = normalise_base_url(public_base_url)
    except ValueError as exc:
        raise IssuanceRejected(str(exc), field="public_base_url") from None
    dns_names = _check_names(names)
    ips = _check_ips(ip_addresses)
    if not dns_names and not ips:
        raise IssuanceRejected("at least one name is required", field="names")

    # The issuer and its key must belong together and be able to issue now.
    if not ca_key.matches(issuer):
        raise IssuanceRejected(
            "the CA key does not belong to the issuer certificate", field="issuer"
        )
    try:
        not_before = truncate_to_seconds(now)
    except (TypeError, ValueError) as exc:
        raise IssuanceRejected(str(exc), field="now") from None
    if not (issuer.not_valid_before_utc <= not_before < issuer.not_valid_after_utc):
        raise IssuanceRejected("the issuing CA is not valid at this time", field="issuer")

    # Defence in depth: the CSR was checked when parsed, check its key again here.
    try:
        check_subscriber_public_key(csr_info.public_key)
    except CsrRejected as exc:
        raise IssuanceRejected(exc.reason, field="csr") from None
    if spki_sha256(csr_info.public_key) == spki_sha256(issuer.public_key()):
        raise IssuanceRejected("the subscriber key is the CA's own key", field="csr")

    try:
        not_after = cap_not_after(
            not_before,
            requested_not_after,
            max_days=private.max_validity_days if level is ValidationLevel.PRIVATE else None,
        )
    except (TypeError, ValueError) as exc:
        raise IssuanceRejected(str(exc), field="not_after") from None
    not_after = min(not_after, issuer.not_valid_after_utc)

    try:
        build_subject(level, subject_fields)
    except ValueError as exc:
        raise IssuanceRejected(str(exc), field="subject_fields") from None
    serial = serial if serial is not None else new_serial_number()
    if not 0 < serial < 2**159:
        raise IssuanceRejected("serial must be positive and below 2^159", field="serial")
    try:
        builder = build_tls_server_certificate(
            issuer_cert=issuer,
            subject_public_key=csr_info.public_key,
            level=level,
            dns_names=dns_names,
            ip_addresses=ips,
            subject_fields=subject_fields,
            serial=serial,
            not_before=not_before,
            not_after=not_after,
            public_base_url=base_url,
            include_common_name=include_common_name,
            private_policy_oid=private.policy_oid,
            rsa_key_encipherment=rsa_key_encipherment,
        )
    except ValueError as exc:
        raise IssuanceRejected(str(exc), field="names") from None

    try:
        signed = lint_then_sign(
            builder, ca_key, lambda der: lint_subscriber_certificate(der, level, private),
            before_signing,
        )
    except LintRejected as exc:
        raise IssuanceRejected(
            "pre-issuance lint refused the certificate: "
            + "; ".join(
                f"{f.code}" + (f" ({f.message})" if f.message else "") for f in exc.report.errors
            ),
            findings=exc.report.findings,
            field="lint",
        ) from None
    except SigningMismatch as exc:
        raise IssuanceRejected(f"signing check failed: {exc}", field="issuer") from None

    cert = signed.certificate
    return IssuedCertificate(
        serial=cert.serial_number,
        der=cert.public_bytes(Encoding.DER),
        pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        lint_findings=signed.report.findings,
        certificate=cert,
    )


def _pem(cert: x509.Certificate | IssuedCertificate) -> str:
    if isinstance(cert, IssuedCertificate):
        return cert.pem
    return cert.public_bytes(Encoding.PEM).decode("ascii")


def build_chain_pem(
    cert: x509.Certificate | IssuedCertificate,
    issuing_ca: x509.Certificate,
    root: x509.Certificate | None = None,
) -> str:
    """Leaf, then issuing CA, then (only if given) the root, as concatenated PEM.

    Servers should send leaf + issuing CA; clients already trust the root, so include it
    only for "full chain" downloads.
    """
    return "".join(_pem(c) for c in (cert, issuing_ca, root) if c is not None)
