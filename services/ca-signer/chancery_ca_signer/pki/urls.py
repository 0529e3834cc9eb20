"""Public CA URLs carried inside certificates, and the stable issuer identifier.

The base URL is configuration (``public_base_url``), distinct from whatever address a
developer reaches the gateway on: pkilint (and the BR) refuse reserved or internal
hosts (``.example``, ``.test``, ``.local``, ``localhost``, private IPs) anywhere in a
certificate, including these URLs. BR 7.1.2.7.7 / 7.1.2.11.2 require plain ``http``
for caIssuers, OCSP and CRL URLs (clients fetch them before they can validate TLS).

Routes (api.md): ``GET /ca/issuers/{id}.crt``, ``GET /ca/crl/{id}.crl``,
``POST /ca/ocsp`` and ``GET /ca/ocsp/{request}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

__all__ = ["CaUrls", "issuer_id", "ca_urls", "normalise_base_url"]

#: Length of the issuer id in bytes of the subject key identifier (hex doubles it).
_ISSUER_ID_BYTES = 8


def issuer_id(ca: x509.Certificate | x509.SubjectKeyIdentifier | bytes) -> str:
    """Short stable id of a CA: lower-case hex of the first 8 bytes of its subject key identifier.

    Stable because the SKI is derived from the CA's public key (a re-issued CA
    certificate for the same key keeps its id, so URLs in issued certificates keep
    working); short enough for URLs. Accepts a CA certificate, its SKI extension value,
    or the raw key identifier bytes.
    """
    if isinstance(ca, x509.Certificate):
        try:
            digest = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            digest = x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest  # type: ignore[arg-type]
    elif isinstance(ca, x509.SubjectKeyIdentifier):
        digest = ca.digest
    elif isinstance(ca, (bytes, bytearray)):
        digest = bytes(ca)
    else:
        raise TypeError("issuer_id() takes a certificate, a SubjectKeyIdentifier or bytes")
    if len(digest) < _ISSUER_ID_BYTES:
        raise ValueError("subject key identifier is too short to derive an issuer id")
    return digest[:_ISSUER_ID_BYTES].hex()


def normalise_base_url(public_base_url: str) -> str:
    """Validate and normalise ``http://host[:port][/prefix]`` (no trailing slash)."""
    if not isinstance(public_base_url, str) or not public_base_url.strip():
        raise ValueError("public_base_url is required")
    url = public_base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(
            "public_base_url must use http:// (BR requires http for AIA, OCSP and CRL URLs)"
        )
    if not parts.hostname:
        raise ValueError("public_base_url has no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("public_base_url must not carry a query, fragment or credentials")
    return url


@dataclass(frozen=True)
class CaUrls:
    """The public URLs a certificate issued by one CA points at."""

    ca_issuers: str  # the issuing CA's certificate (DER)
    crl: str  # the issuing CA's CRL (DER)
    ocsp: str  # the OCSP responder


def ca_urls(public_base_url: str, issuer: str | x509.Certificate) -> CaUrls:
    """URLs for certificates issued by ``issuer`` (a CA certificate or its :func:`issuer_id`)."""
    base = normalise_base_url(public_base_url)
    iid = issuer if isinstance(issuer, str) else issuer_id(issuer)
    return CaUrls(
        ca_issuers=f"{base}/ca/issuers/{iid}.crt",
        crl=f"{base}/ca/crl/{iid}.crl",
        ocsp=f"{base}/ca/ocsp",
    )
