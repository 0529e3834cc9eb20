"""Shared fixtures for the PKI core unit tests.

The service directory is put on sys.path so ``import chancery_ca_signer`` works without
installing the package. Hierarchies are session-scoped: key generation and pkilint
validator construction happen once per test run.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

SERVICE_DIR = Path(__file__).resolve().parents[2]
if str(SERVICE_DIR) not in sys.path:
    sys.path.insert(0, str(SERVICE_DIR))

from chancery_ca_signer.pki import csr as csr_mod  # noqa: E402
from chancery_ca_signer.pki.hierarchy import create_hierarchy  # noqa: E402
from chancery_ca_signer.pki.keys import KeyType  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BASE_URL = "http://pki.example.com"
PASSPHRASE = "correct horse battery staple 42"
UTC = dt.UTC


def make_csr_pem(private_key, names=("www.example.com",), ips=(), hash_alg=None, cn=True) -> bytes:
    """A PEM CSR signed by ``private_key`` with CN = first name and the names as SANs."""
    subject = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        if cn and names
        else x509.Name([])
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    sans = [x509.DNSName(n) for n in names]
    import ipaddress

    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if hash_alg is None and not isinstance(
        private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)
    ):
        algorithm = None  # Ed25519 / Ed448
    else:
        algorithm = hash_alg or hashes.SHA256()
    return builder.sign(private_key, algorithm).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def make_csr():
    """The :func:`make_csr_pem` helper (a fixture, so test modules need not import conftest)."""
    return make_csr_pem


@pytest.fixture(scope="session")
def base_url() -> str:
    return BASE_URL


@pytest.fixture(scope="session")
def passphrase() -> str:
    return PASSPHRASE


@pytest.fixture(scope="session")
def now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="session")
def hierarchy(now):
    """ECDSA hierarchy (root P-384, issuing P-256), valid from now."""
    return create_hierarchy(
        passphrase=PASSPHRASE,
        public_base_url=BASE_URL,
        organization="Chancery Test",
        country="US",
        now=now - dt.timedelta(minutes=5),
    )


@pytest.fixture(scope="session")
def private_hierarchy(now):
    """A private ECDSA hierarchy (its issuing CA linted as a private CA), valid from now,
    whose URLs name an internal host."""
    return create_hierarchy(
        passphrase=PASSPHRASE,
        public_base_url="http://pki.corp.internal",
        organization="Chancery Test Private",
        country="US",
        now=now - dt.timedelta(minutes=5),
        hierarchy="private",
    )


@pytest.fixture(scope="session")
def old_hierarchy():
    """ECDSA hierarchy valid from 2025-01-01, to issue at dates across the BR schedule."""
    return create_hierarchy(
        passphrase=PASSPHRASE,
        public_base_url=BASE_URL,
        organization="Chancery Test",
        country="US",
        now=dt.datetime(2025, 1, 1, tzinfo=UTC),
    )


@pytest.fixture(scope="session")
def rsa_hierarchy(now):
    """RSA hierarchy (RSA 2048 root and issuing CA), valid from now."""
    return create_hierarchy(
        passphrase=PASSPHRASE,
        public_base_url=BASE_URL,
        organization="Chancery Test",
        country="US",
        now=now - dt.timedelta(minutes=5),
        root_key_type=KeyType.RSA_2048,
        issuing_key_type=KeyType.RSA_2048,
    )


@pytest.fixture(scope="session")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_csr(ec_key):
    return csr_mod.parse_csr(make_csr_pem(ec_key, ("www.example.com", "example.com")))


@pytest.fixture(scope="session")
def rsa_csr(rsa_key):
    return csr_mod.parse_csr(make_csr_pem(rsa_key, ("www.example.com",)))
