"""The first look at a certificate signing request, when the order is placed.

The registration authority refuses a bad CSR at once, while the requester is still at
the form, rather than after approval and payment: it must parse, its self-signature
must verify (the requester holds the private key), and the key must be one the
Baseline Requirements allow (RSA >= 2048 bits and a multiple of 8, or ECDSA on P-256,
P-384 or P-521). The names it carries (subject CN, subjectAltName) are returned so the
order can require them to be among the requested names. ca-signer checks again, and
more deeply, before it signs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

MAX_CSR_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
ALLOWED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class CsrRejected(ValueError):
    """The CSR is not acceptable; the message is safe to show to the requester."""


@dataclass(frozen=True)
class CheckedCsr:
    pem: str
    key_description: str  # "RSA 2048", "ECDSA P-256"
    names: tuple[str, ...] = ()  # as written in the CSR: CN values, then dNSName and IP SANs


def check_csr(pem: str) -> CheckedCsr:
    """Parse ``pem``, verify its signature and apply the key policy."""
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
    description = _check_key(public_key)
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrRejected("is signed with an unsupported algorithm") from exc
    if not signature_ok:
        raise CsrRejected("has a signature that does not verify; it was altered or damaged")
    return CheckedCsr(pem=data.decode("ascii", "replace") + "\n", key_description=description,
                      names=_names_in(csr))


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


def _check_key(public_key: object) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        bits = public_key.key_size
        if bits < MIN_RSA_BITS:
            raise CsrRejected(f"has an RSA key of {bits} bits; at least {MIN_RSA_BITS} "
                              "are required")
        if bits % 8:
            raise CsrRejected(f"has an RSA key of {bits} bits, which is not a multiple of 8")
        return f"RSA {bits}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = ALLOWED_CURVES.get(public_key.curve.name)
        if curve is None:
            raise CsrRejected(f"uses the elliptic curve {public_key.curve.name}; only P-256, "
                              "P-384 and P-521 are allowed")
        return f"ECDSA {curve}"
    kind = type(public_key).__name__.replace("PublicKey", "").lstrip("_") or "unknown"
    raise CsrRejected(f"holds a {kind} key; only RSA (2048 bits or more) and ECDSA "
                      "(P-256, P-384, P-521) keys are allowed")
