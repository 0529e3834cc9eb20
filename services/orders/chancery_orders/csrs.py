"""The first look at a certificate signing request, when the order is placed.

The registration authority refuses a bad CSR at once, while the requester is still at
the form, rather than after approval and payment: it must parse, its self-signature
must verify (the requester holds the private key), and the key must pass the same key
policy ca-signer applies before signing (:mod:`chancery_shared.subscriber_keys`: sizes,
curves, RSA weaknesses, and this service's copy of the compromised-key blocklist). The
names it carries (subject CN, subjectAltName) are returned so the
order can require them to be among the requested names. ca-signer checks again, and
more deeply, before it signs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chancery_shared.subscriber_keys import (
    WEAK_KEY_RULES,
    DebianWeakKeys,
    KeyRefused,
    check_subscriber_key,
    spki_sha256,
)
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

MAX_CSR_BYTES = 64 * 1024


class CsrRejected(ValueError):
    """The CSR is not acceptable; the message is safe to show to the requester. ``rule``
    names the key-policy rule when the key itself was refused."""

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule

    @property
    def key_blocked(self) -> bool:
        """The key must never be certified (weak or compromised), not merely not offered."""
        return self.rule in WEAK_KEY_RULES


@dataclass(frozen=True)
class CheckedCsr:
    pem: str
    key_description: str  # "RSA 2048", "ECDSA P-256"
    spki_sha256: str = ""  # the key's SubjectPublicKeyInfo SHA-256 (hex): the blocklists' name
    names: tuple[str, ...] = ()  # as written in the CSR: CN values, then dNSName and IP SANs


@dataclass(frozen=True)
class KeyPolicy:
    """What the key policy needs from the service: the test against its copy of the
    blocklist, and the ECDSA curves on offer (``CHANCERY_SUBSCRIBER_EC_CURVES``)."""

    is_key_blocked: Callable[[str], bool] | None = None
    curves: frozenset[str] | None = None
    debian_weak_keys: DebianWeakKeys | None = None  # CHANCERY_WEAK_KEY_LISTS


def check_csr(pem: str, policy: KeyPolicy | None = None) -> CheckedCsr:
    """Parse ``pem``, verify its signature and apply the key policy."""
    policy = policy or KeyPolicy()
    if not pem or not pem.strip():
        raise CsrRejected("is empty; paste the PEM text of the CSR")
    data = pem.strip().encode("utf-8", "replace")
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejected(f"is larger than {MAX_CSR_BYTES // 1024} KiB")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("is not a PEM certificate signing request "
                          "(-----BEGIN CERTIFICATE REQUEST-----)") from exc
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("holds a public key of an unsupported type") from exc
    try:
        description = check_subscriber_key(public_key, is_key_blocked=policy.is_key_blocked,
                                           allowed_curves=policy.curves,
                                           debian_weak_keys=policy.debian_weak_keys)
    except KeyRefused as exc:
        raise CsrRejected(f"is refused: {exc.reason}", rule=exc.rule) from None
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("is signed with an unsupported algorithm") from exc
    if not signature_ok:
        raise CsrRejected("has a signature that does not verify; it was altered or damaged")
    return CheckedCsr(pem=data.decode("ascii", "replace") + "\n", key_description=description,
                      spki_sha256=spki_sha256(public_key), names=_names_in(csr))


def _names_in(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value
        names.setdefault(value if isinstance(value, str) else value.decode("latin-1"), None)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return tuple(names)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CsrRejected("has a subjectAltName extension that cannot be read") from exc
    for name in san.get_values_for_type(x509.DNSName):
        names.setdefault(name, None)
    for address in san.get_values_for_type(x509.IPAddress):
        names.setdefault(str(address), None)
    return tuple(names)
