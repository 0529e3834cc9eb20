"""Which certificate file a server wants when the download does not say (one table).

``GET /orders/{id}/certificate`` without ``format`` answers in the format the order's
server type installs most simply: a PEM file with the issuing CA for the servers that
read PEM bundles, PKCS#7 for the Windows and Java stores that import one file holding
the whole chain.
"""

from __future__ import annotations

DEFAULT_FORMAT_BY_SERVER_TYPE: dict[str, str] = {
    "apache": "pem-chain",   # SSLCertificateFile takes the leaf followed by the chain
    "nginx": "pem-chain",    # ssl_certificate: the leaf then the intermediates
    "iis": "p7b",            # "Complete Certificate Request" imports a .p7b with its chain
    "tomcat": "p7b",         # keytool -importcert of a PKCS#7 chain into the keystore
    "f5": "pem-chain",       # certificate and chain (bundle) as PEM
    "haproxy": "pem-chain",  # one PEM bundle (the key is appended by the customer)
    "aws": "pem-chain",      # ACM import: certificate body and chain, PEM
    "azure": "pem-chain",    # Key Vault merges a PEM (or PKCS#7) answer to its request
    "other": "pem-chain",
}
FALLBACK_FORMAT = "pem-chain"


def default_format(server_type: str) -> str:
    """The download format for ``server_type`` (``pem-chain`` for anything unknown)."""
    return DEFAULT_FORMAT_BY_SERVER_TYPE.get(server_type, FALLBACK_FORMAT)
