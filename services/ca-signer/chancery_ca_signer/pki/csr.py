"""Certificate signing requests: parse, verify, and apply the subscriber key policy.

The key policy itself (sizes, curves, RSA weaknesses, the blocklist test) lives in
:mod:`chancery_shared.subscriber_keys`, which orders applies when a request is placed;
ca-signer applies it again here, before it signs. Known-compromised keys are checked
through the optional ``is_key_blocked`` callback over the SPKI SHA-256, because the
blocklist is data owned by the service, not this pure module.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from chancery_shared.subscriber_keys import (
    DebianWeakKeys,
    KeyRefused,
    check_subscriber_key,
    describe_public_key,
    spki_sha256,
)
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier

__all__ = [
    "CsrRejected",
    "CsrInfo",
    "parse_csr",
    "check_subscriber_public_key",
    "describe_public_key",
    "spki_sha256",
    "MAX_CSR_BYTES",
]

#: Larger inputs are refused before parsing (a CSR is a few KiB at most).
MAX_CSR_BYTES = 64 * 1024

_OID_RSA_ENCRYPTION = ObjectIdentifier("1.2.840.113549.1.1.1")
_OID_EC_PUBLIC_KEY = ObjectIdentifier("1.2.840.10045.2.1")
_WEAK_CSR_HASHES = {"md5", "md2", "md4"}


class CsrRejected(ValueError):
    """A CSR (or the key in it) is not acceptable. ``reason`` is safe to show to the user;
    ``rule`` names the key-policy rule when the key was refused (``rsa_roca``,
    ``compromised``...)."""

    def __init__(self, reason: str, field: str = "csr", rule: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.rule = rule

    def __repr__(self) -> str:
        return f"CsrRejected(reason={self.reason!r}, field={self.field!r}, rule={self.rule!r})"


@dataclass(frozen=True)
class CsrInfo:
    """What the rest of ca-signer needs from a verified, policy-checked CSR."""

    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = field(repr=False)
    key_type: str  # e.g. "RSA 2048", "ECDSA P-256"
    common_names: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    spki_sha256: str  # hex; identifies the key (blocklists, duplicate-key checks)
    subject: str  # RFC 4514 string, informational only

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the CSR asks for (CN first, then SANs), without duplicates."""
        seen: dict[str, None] = {}
        for n in (*self.common_names, *self.dns_names, *self.ip_addresses):
            seen.setdefault(n, None)
        return tuple(seen)


def check_subscriber_public_key(
    public_key: object,
    *,
    is_key_blocked: Callable[[str], bool] | None = None,
    allowed_curves: frozenset[str] | None = None,
    debian_weak_keys: DebianWeakKeys | None = None,
) -> str:
    """Apply the subscriber key policy; the key description, or :class:`CsrRejected`."""
    try:
        return check_subscriber_key(public_key, is_key_blocked=is_key_blocked,
                                    allowed_curves=allowed_curves,
                                    debian_weak_keys=debian_weak_keys)
    except KeyRefused as exc:
        raise CsrRejected(exc.reason, rule=exc.rule) from None


# --- parsing -------------------------------------------------------------------------


def _load(data: str | bytes) -> x509.CertificateSigningRequest:
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if not isinstance(data, (bytes, bytearray)):
        raise CsrRejected("CSR must be PEM text or DER bytes")
    data = bytes(data)
    if not data.strip():
        raise CsrRejected("CSR is empty")
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejected(f"CSR is larger than {MAX_CSR_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data.strip())
        return x509.load_der_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm):
        raise CsrRejected("CSR is not a valid PKCS#10 request (PEM or DER)") from None


def parse_csr(
    data: str | bytes,
    *,
    is_key_blocked: Callable[[str], bool] | None = None,
    allowed_curves: frozenset[str] | None = None,
    debian_weak_keys: DebianWeakKeys | None = None,
) -> CsrInfo:
    """Parse a PEM or DER CSR, check its key against policy, verify its self-signature.

    The key is checked before the signature so the user learns the real problem (an
    Ed25519 or 1024-bit key) rather than a generic signature error.
    """
    csr = _load(data)

    try:
        spki_oid = csr.public_key_algorithm_oid
    except Exception:
        spki_oid = None
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CsrRejected("CSR public key is malformed or uses an unsupported algorithm") from None

    if (
        isinstance(public_key, rsa.RSAPublicKey)
        and spki_oid is not None
        and spki_oid != _OID_RSA_ENCRYPTION
    ):
        raise CsrRejected(
            "RSA keys must use the rsaEncryption algorithm identifier (not RSASSA-PSS)"
        )
    if (
        isinstance(public_key, ec.EllipticCurvePublicKey)
        and spki_oid is not None
        and spki_oid != _OID_EC_PUBLIC_KEY
    ):
        raise CsrRejected("ECDSA keys must use the id-ecPublicKey algorithm identifier")
    key_type = check_subscriber_public_key(public_key, is_key_blocked=is_key_blocked,
                                           allowed_curves=allowed_curves,
                                           debian_weak_keys=debian_weak_keys)

    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        signature_ok = False
    if not signature_ok:
        raise CsrRejected(
            "CSR signature does not verify (the request was altered or is not signed by its key)"
        )
    try:
        sig_hash = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        sig_hash = None
    if isinstance(sig_hash, hashes.HashAlgorithm) and sig_hash.name in _WEAK_CSR_HASHES:
        raise CsrRejected(f"CSR is signed with {sig_hash.name.upper()}; use SHA-256 or better")

    try:
        common_names = tuple(
            str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
        subject = csr.subject.rfc4514_string()
    except ValueError:
        raise CsrRejected("CSR subject is malformed") from None

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    try:
        san = csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        raise CsrRejected("CSR extensions are malformed") from None
    if san is not None:
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(
            str(ipaddress.ip_address(ip)) for ip in san.get_values_for_type(x509.IPAddress)
        )

    return CsrInfo(
        public_key=public_key,  # type: ignore[arg-type]
        key_type=key_type,
        common_names=common_names,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        spki_sha256=spki_sha256(public_key),
        subject=subject,
    )
