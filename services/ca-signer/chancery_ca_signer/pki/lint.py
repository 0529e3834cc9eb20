"""Pre-issuance linting with pkilint (required by the BR since 2025-03-15).

Technique: the to-be-signed certificate is signed with a *throwaway* key of the same
type as the CA key (same signature algorithm identifier, hence identical TBS bytes),
that certificate is linted, and only if pkilint reports no ERROR/FATAL finding is the
same builder signed with the real CA key. The real certificate's TBS bytes must then
equal the linted ones, and its signature must verify under the CA's public key. So
the CA key never signs anything that was not linted byte for byte.

Profiles:

* ``dv``/``ov``/``ev`` subscriber certificates: pkilint's CA/B Forum TLS BR validators
  for DV/OV/EV final certificates, with pkilint's own serverauth finding filters (the
  same as ``lint_cabf_serverauth_cert lint -t DV-FINAL-CERTIFICATE``).
* ``private`` subscriber certificates: pkilint's RFC 5280 validators (``lint_pkix_cert``),
  because the BR do not govern a private hierarchy (names may be internal), plus
  Chancery's own private-profile rules (:func:`private_findings`): validity within the
  configured cap, the configured private policy OID present, and no CA/B Forum
  reserved policy OID (2.23.140.*), which would claim BR compliance.
* CA certificates: the serverauth validators for the type pkilint detects (root, or
  internal unconstrained TLS CA for Chancery's public issuing CAs); a private issuing
  CA gets the RFC 5280 validators and the no-CA/B-OID rule (its URLs may name
  internal hosts).

Each pkilint validator is built once per profile (about 0.2 s) and reused; a lock
per validator serialises use, since pkilint does not document thread safety and one
lint takes a few milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from .keys import CaKey, CaPrivateKey, CaPublicKey, KeyType, generate_private_key
from .profiles import CABF_POLICY_ARC, PrivateProfile, ValidationLevel
from .validity import validity_period

__all__ = [
    "LintFinding",
    "LintReport",
    "LintRejected",
    "BLOCKING_SEVERITIES",
    "lint_certificate",
    "lint_subscriber_certificate",
    "lint_ca_certificate",
    "lint_pkix_certificate",
    "lint_private_certificate",
    "lint_private_ca_certificate",
    "private_findings",
    "throwaway_key",
    "sign_with_throwaway_key",
    "lint_then_sign",
    "LintedCertificate",
    "SigningMismatch",
    "warm_up",
]

#: Findings of these severities refuse issuance.
BLOCKING_SEVERITIES = frozenset({"FATAL", "ERROR"})
_REPORTED_SEVERITIES = ("FATAL", "ERROR", "WARNING", "NOTICE")


@dataclass(frozen=True)
class LintFinding:
    """One pkilint finding, reduced to plain data (safe to store and to send in events)."""

    severity: str  # FATAL, ERROR, WARNING, NOTICE
    code: str  # e.g. "cabf.internal_domain_name"
    message: str | None
    path: str  # pkilint node path, e.g. "certificate.tbsCertificate.extensions.3..."
    validator: str

    @property
    def blocking(self) -> bool:
        return self.severity in BLOCKING_SEVERITIES

    def __str__(self) -> str:
        msg = f": {self.message}" if self.message else ""
        return f"{self.severity} {self.code}{msg} @ {self.path}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "validator": self.validator,
        }


@dataclass(frozen=True)
class LintReport:
    """All reported findings for one certificate under one pkilint profile."""

    profile: str  # pkilint certificate type name, or "PKIX"
    findings: tuple[LintFinding, ...]

    @property
    def errors(self) -> tuple[LintFinding, ...]:
        return tuple(f for f in self.findings if f.blocking)

    @property
    def ok(self) -> bool:
        """No ERROR or FATAL finding (warnings and notices do not block)."""
        return not self.errors

    def summary(self) -> str:
        errs = self.errors
        if not errs:
            return f"{self.profile}: no errors ({len(self.findings)} non-blocking findings)"
        return f"{self.profile}: " + "; ".join(str(f) for f in errs)


class LintRejected(Exception):
    """pkilint found ERROR/FATAL problems in a to-be-signed certificate; nothing was signed."""

    def __init__(self, report: LintReport) -> None:
        super().__init__(f"pre-issuance lint failed: {report.summary()}")
        self.report = report

    @property
    def findings(self) -> tuple[LintFinding, ...]:
        return self.report.findings


# --- pkilint validators, built lazily once per profile -----------------------------------


class _Linter:
    def __init__(self, name: str, validator: object, filters: list | None) -> None:
        self.name = name
        self.validator = validator
        self.filters = filters
        self.lock = threading.Lock()


_linters: dict[str, _Linter] = {}
_linters_lock = threading.Lock()
_PKIX = "PKIX"


def _wildcard_filter():
    """PKIX-profile filter: accept ``*.`` + a valid domain name in a dNSName SAN.

    pkilint's RFC 5280 name check knows no wildcards, but wildcard SANs are standard for
    TLS (RFC 9525; BR 7.1.2.7.12), and the serverauth profile accepts them.
    """
    from pkilint import finding_filter
    from pkilint.pkix import general_name

    target = general_name.DomainNameSyntaxValidator.VALIDATION_NOT_PREFERRED_NAME_SYNTAX

    class WildcardDnsNameFilter(finding_filter.FindingDescriptionFilter):
        def filter(self, result, finding_description) -> bool:
            if finding_description.finding != target or result.node.name != "dNSName":
                return True
            value = str(result.node.pdu)
            is_wildcard = value.startswith("*.") and general_name.validators_predicate(
                general_name.validators.domain, value[2:]
            )
            return not is_wildcard

    return WildcardDnsNameFilter()


def _build_linter(profile: str) -> _Linter:
    from pkilint.cabf import serverauth
    from pkilint.cabf.serverauth import serverauth_constants
    from pkilint.pkix import certificate, extension, name

    if profile == _PKIX:
        validator = certificate.create_pkix_certificate_validator_container(
            certificate.create_decoding_validators(
                name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS
            ),
            [
                certificate.create_issuer_validator_container([]),
                certificate.create_validity_validator_container(),
                certificate.create_subject_validator_container([]),
                certificate.create_extensions_validator_container([]),
                certificate.create_spki_validator_container([]),
            ],
        )
        return _Linter(profile, validator, [_wildcard_filter()])

    cert_type = serverauth_constants.CertificateType[profile]
    validator = certificate.create_pkix_certificate_validator_container(
        serverauth.create_decoding_validators(),
        serverauth.create_validators(cert_type),
    )
    return _Linter(profile, validator, serverauth.create_serverauth_finding_filters(cert_type))


def _linter(profile: str) -> _Linter:
    linter = _linters.get(profile)
    if linter is None:
        with _linters_lock:
            linter = _linters.get(profile)
            if linter is None:
                linter = _build_linter(profile)
                _linters[profile] = linter
    return linter


_LEVEL_PROFILES = {
    ValidationLevel.DV: "DV_FINAL_CERTIFICATE",
    ValidationLevel.OV: "OV_FINAL_CERTIFICATE",
    ValidationLevel.EV: "EV_FINAL_CERTIFICATE",
    ValidationLevel.PRIVATE: _PKIX,
}


def warm_up(levels: tuple[ValidationLevel | str, ...] = tuple(ValidationLevel)) -> None:
    """Build the validators now (e.g. at worker start) instead of on the first request."""
    for level in levels:
        _linter(_LEVEL_PROFILES[ValidationLevel(level)])


def _load_document(der: bytes):
    from pkilint import loader

    try:
        return loader.RFC5280CertificateDocumentLoader().load_der_document(der, "tbs-certificate")
    except ValueError as exc:
        raise ValueError(f"pkilint could not decode the certificate: {exc}") from None


def lint_certificate(der: bytes, profile: str) -> LintReport:
    """Lint DER ``der`` under ``profile``: a pkilint serverauth certificate type name
    (e.g. ``"DV_FINAL_CERTIFICATE"``, ``"ROOT_CA"``) or ``"PKIX"`` for RFC 5280 only."""
    from pkilint import finding_filter

    linter = _linter(profile)
    doc = _load_document(der)
    with linter.lock:
        results = linter.validator.validate(doc.root)
        if linter.filters:
            results, _ = finding_filter.filter_results(linter.filters, results)

    findings = []
    for result in results:
        for fd in result.finding_descriptions:
            severity = fd.finding.severity.name
            if severity not in _REPORTED_SEVERITIES:
                continue
            findings.append(
                LintFinding(
                    severity=severity,
                    code=fd.finding.code,
                    message=fd.message,
                    path=result.node.path,
                    validator=result.validator.name,
                )
            )
    findings.sort(key=lambda f: _REPORTED_SEVERITIES.index(f.severity))
    return LintReport(profile=profile, findings=tuple(findings))


def lint_subscriber_certificate(der: bytes, level: ValidationLevel | str,
                                private: PrivateProfile | None = None) -> LintReport:
    """Lint a subscriber TLS certificate with the linter meant for its validation level:
    the CA/B Forum serverauth profile for DV/OV/EV, :func:`lint_private_certificate`
    (with ``private``, default settings if None) for ``private``."""
    level = ValidationLevel(level)
    if level is ValidationLevel.PRIVATE:
        return lint_private_certificate(der, private or PrivateProfile())
    return lint_certificate(der, _LEVEL_PROFILES[level])


#: The name of the private subscriber lint in reports: pkilint PKIX plus Chancery's rules.
PRIVATE_LINT = "PKIX+chancery.private"
_PRIVATE_VALIDATOR = "ChanceryPrivateProfileValidator"


def _cabf_oids(cert: x509.Certificate) -> list[str]:
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return []
    return [p.policy_identifier.dotted_string for p in policies
            if p.policy_identifier.dotted_string.startswith(CABF_POLICY_ARC + ".")]


def private_findings(der: bytes, private: PrivateProfile) -> list[LintFinding]:
    """Chancery's own rules for a private subscriber certificate (all ERROR)."""
    cert = x509.load_der_x509_certificate(der)
    findings = []
    path = "certificate.tbsCertificate"

    def error(code: str, message: str, where: str) -> None:
        findings.append(LintFinding("ERROR", f"chancery.private.{code}", message,
                                    f"{path}.{where}", _PRIVATE_VALIDATOR))

    period = validity_period(cert.not_valid_before_utc, cert.not_valid_after_utc)
    if period.total_seconds() > private.max_validity_days * 86400:
        error("validity_period_exceeds_maximum",
              f"validity of {period.total_seconds() / 86400:g} days exceeds the private "
              f"maximum of {private.max_validity_days} days", "validity")
    for oid in _cabf_oids(cert):
        error("cabf_reserved_policy_oid",
              f"{oid} is a CA/B Forum policy OID; a private certificate must not claim "
              "BR compliance", "extensions.certificatePolicies")
    try:
        policies = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
        oids = [p.policy_identifier.dotted_string for p in policies]
    except x509.ExtensionNotFound:
        oids = []
    if private.policy_oid not in oids:
        error("missing_private_policy_oid",
              f"the private policy OID {private.policy_oid} is not asserted",
              "extensions.certificatePolicies")
    return findings


def lint_private_certificate(der: bytes, private: PrivateProfile) -> LintReport:
    """Lint a private subscriber certificate: pkilint's RFC 5280 validators plus
    :func:`private_findings`."""
    pkix = lint_certificate(der, _PKIX)
    findings = sorted(pkix.findings + tuple(private_findings(der, private)),
                      key=lambda f: _REPORTED_SEVERITIES.index(f.severity))
    return LintReport(profile=PRIVATE_LINT, findings=tuple(findings))


def lint_private_ca_certificate(der: bytes) -> LintReport:
    """Lint a private issuing CA certificate: RFC 5280 validators, and no CA/B Forum
    reserved policy OID."""
    pkix = lint_certificate(der, _PKIX)
    cert = x509.load_der_x509_certificate(der)
    extra = tuple(LintFinding("ERROR", "chancery.private.cabf_reserved_policy_oid",
                              f"{oid} is a CA/B Forum policy OID; a private CA must not "
                              "assert it", "certificate.tbsCertificate.extensions."
                              "certificatePolicies", _PRIVATE_VALIDATOR)
                  for oid in _cabf_oids(cert))
    return LintReport(profile=PRIVATE_LINT, findings=tuple(sorted(
        pkix.findings + extra, key=lambda f: _REPORTED_SEVERITIES.index(f.severity))))


def lint_pkix_certificate(der: bytes) -> LintReport:
    """Lint with the RFC 5280 validators only."""
    return lint_certificate(der, _PKIX)


def lint_ca_certificate(der: bytes) -> LintReport:
    """Lint a root or subordinate CA certificate; pkilint detects which CA type it is."""
    from pkilint.cabf import serverauth

    cert_type = serverauth.determine_certificate_type(_load_document(der))
    return lint_certificate(der, cert_type.name)


# --- throwaway keys and lint-then-sign ----------------------------------------------------

_throwaway: dict[str, CaPrivateKey] = {}
_throwaway_lock = threading.Lock()


def _throwaway_slot(key_type: KeyType) -> KeyType:
    # Every RSA size has the same signature AlgorithmIdentifier (sha256WithRSAEncryption),
    # so one RSA-2048 throwaway serves all RSA CA keys; EC keys use their own curve.
    return KeyType.RSA_2048 if key_type.is_rsa else key_type


def throwaway_key(key_type: KeyType | str) -> CaPrivateKey:
    """A process-wide throwaway private key for ``key_type`` (generated once, never stored)."""
    slot = _throwaway_slot(KeyType(key_type))
    key = _throwaway.get(slot.value)
    if key is None:
        with _throwaway_lock:
            key = _throwaway.get(slot.value)
            if key is None:
                key = generate_private_key(slot)
                _throwaway[slot.value] = key
    return key


def sign_with_throwaway_key(builder: x509.CertificateBuilder, ca_key: CaKey) -> x509.Certificate:
    """Sign ``builder`` with a throwaway key whose signature algorithm matches ``ca_key``'s."""
    return builder.sign(throwaway_key(ca_key.key_type), ca_key.hash_algorithm())


def _verify_signature(public_key: CaPublicKey, cert: x509.Certificate) -> bool:
    hash_alg = cert.signature_hash_algorithm
    if hash_alg is None:
        return False
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hash_alg
            )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
        else:
            return False
    except InvalidSignature:
        return False
    return True


class SigningMismatch(RuntimeError):
    """The CA-signed certificate differs from the linted one, or its signature is wrong."""


@dataclass(frozen=True)
class LintedCertificate:
    """A certificate signed by the CA key after its TBS passed linting."""

    certificate: x509.Certificate
    report: LintReport


def lint_then_sign(
    builder: x509.CertificateBuilder,
    ca_key: CaKey,
    lint: Callable[[bytes], LintReport],
    before_signing: Callable[[x509.Certificate], None] | None = None,
) -> LintedCertificate:
    """Lint ``builder`` (throwaway-signed) with ``lint``; if clean, sign with ``ca_key``.

    Raises :class:`LintRejected` (nothing signed by the CA) on ERROR/FATAL findings, and
    :class:`SigningMismatch` if the real certificate's TBS differs from the linted TBS or
    its signature does not verify under ``ca_key``'s public key (such a certificate is
    discarded by the caller, never published). ``before_signing`` gets the linted probe
    (throwaway-signed, same to-be-signed bytes) once linting passed, before the CA key
    signs: the place to record the intent durably.
    """
    probe = sign_with_throwaway_key(builder, ca_key)
    report = lint(probe.public_bytes(Encoding.DER))
    if not report.ok:
        raise LintRejected(report)
    if before_signing is not None:
        before_signing(probe)

    cert = ca_key.sign_certificate(builder)
    if cert.tbs_certificate_bytes != probe.tbs_certificate_bytes:
        raise SigningMismatch("signed certificate differs from the linted to-be-signed certificate")
    if cert.signature_algorithm_oid != probe.signature_algorithm_oid:
        raise SigningMismatch(
            "signed certificate uses another signature algorithm than the linted one"
        )
    if not _verify_signature(ca_key.public_key(), cert):
        raise SigningMismatch("signed certificate does not verify under the CA public key")
    return LintedCertificate(certificate=cert, report=report)
