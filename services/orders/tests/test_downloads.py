"""The certificate download's default format follows the order's server type."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_orders.downloads import DEFAULT_FORMAT_BY_SERVER_TYPE, default_format
from chancery_orders.model import SERVER_TYPES
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from .issuing import ORDERS, issue, place

NOW = datetime.now(UTC)
EXPECTED = {"apache": "pem-chain", "nginx": "pem-chain", "iis": "p7b", "tomcat": "p7b",
            "f5": "pem-chain", "haproxy": "pem-chain", "aws": "pem-chain",
            "azure": "pem-chain", "other": "pem-chain"}


def test_every_server_type_has_a_default_format():
    assert set(DEFAULT_FORMAT_BY_SERVER_TYPE) == set(SERVER_TYPES)
    assert DEFAULT_FORMAT_BY_SERVER_TYPE == EXPECTED
    assert default_format("something new") == "pem-chain"


@pytest.fixture(scope="module")
def issued_for(shared_harness, rsa_key, self_signed):
    """An issued order per server type, in one service for the module."""
    shared_harness.validate_domain("example.com")
    ids = {}
    for server_type in SERVER_TYPES:
        order = place(shared_harness, rsa_key, server_type=server_type)
        issue(shared_harness, order, not_before=NOW - timedelta(days=1),
              not_after=NOW + timedelta(days=90), leaf_pem=self_signed[0],
              chain_pem=self_signed[1])
        ids[server_type] = order["id"]
    return ids


def read(fmt: str, data: bytes) -> list[x509.Certificate]:
    if fmt == "p7b":
        return pkcs7.load_der_pkcs7_certificates(data)
    return x509.load_pem_x509_certificates(data)


@pytest.mark.parametrize("server_type", SERVER_TYPES)
def test_without_a_format_the_server_types_default_is_sent(shared_harness, issued_for,
                                                         self_signed, server_type):
    answer = shared_harness.client.get(f"{ORDERS}/{issued_for[server_type]}/certificate",
                                       headers=shared_harness.headers("admin"))

    assert answer.status_code == 200
    fmt = EXPECTED[server_type]
    leaf, chain = (x509.load_pem_x509_certificate(pem.encode()) for pem in self_signed)
    assert set(read(fmt, answer.data)) == {leaf, chain}  # both carry the chain
    if fmt == "p7b":
        assert answer.mimetype == "application/pkcs7-mime"
        assert answer.headers["Content-Disposition"].endswith('.p7b"')
    else:
        assert answer.mimetype == "application/x-pem-file"
        assert answer.headers["Content-Disposition"].endswith('.chain.pem"')


def test_an_explicit_format_wins_over_the_default(shared_harness, issued_for, self_signed):
    answer = shared_harness.client.get(f"{ORDERS}/{issued_for['iis']}/certificate?format=pem",
                                       headers=shared_harness.headers("admin"))
    assert answer.mimetype == "application/x-pem-file"
    assert x509.load_pem_x509_certificates(answer.data) == [
        x509.load_pem_x509_certificate(self_signed[0].encode())]
