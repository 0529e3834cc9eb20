"""A key revoked for key compromise is refused everywhere afterwards, in both modes.

One account orders a certificate, then revokes it for ``key_compromise``; ca-signer puts
the key on its blocklist and announces it, and a request with the same key from another
account is refused when it is placed (422 ``key_blocked``, rule ``compromised``). A weak
RSA key is refused the same way without any revocation.
"""

from __future__ import annotations

import uuid

import pytest
from chancery_shared.testing import wait_for
from chancery_shared.weak_keys import fermat_weak_key
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.test_ca_chain import open_account, order_status

pytestmark = pytest.mark.e2e


def csr_for(key, name: str) -> str:
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def order_body(key, name: str) -> dict:
    return {"product": "ssl_dv", "term_years": 1, "server_type": "nginx", "common_name": name,
            "sans": [], "csr": csr_for(key, name)}


def test_a_key_revoked_for_compromise_is_refused_for_every_account(stack, loopback_dns):
    first = open_account(stack.base_url, loopback_dns)
    second = open_account(stack.base_url, loopback_dns)
    key = ec.generate_private_key(ec.SECP256R1())
    name = f"kc-{uuid.uuid4().hex[:8]}.example.com"
    placed = first.post("/api/orders/v1/orders", order_body(key, name))
    assert placed.status_code == 201, placed.text
    order = placed.json()
    if order["status"] == "pending_approval":
        assert first.post(f"/api/orders/v1/orders/{order['id']}/approve", {}).status_code == 200
    order_status(first, order["id"], "issued")
    revoked = first.post(f"/api/orders/v1/orders/{order['id']}/revoke",
                         {"reason": "key_compromise"})
    assert revoked.status_code == 200, revoked.text
    order_status(first, order["id"], "revoked")

    def refused_for_the_other_account():
        answer = second.post("/api/orders/v1/orders",
                             order_body(key, f"other-{uuid.uuid4().hex[:6]}.example.com"))
        if answer.status_code == 201:
            return None  # orders has not heard of the block yet (the event is on its way)
        return [answer]  # (a Response is falsy for a 4xx)

    [answer] = wait_for(refused_for_the_other_account, timeout=30, interval=0.5,
                        message="orders to refuse the compromised key")
    assert answer.status_code == 422, answer.text
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    problem = answer.json()
    assert (problem["code"], problem["rule"]) == ("key_blocked", "compromised")
    assert "csr" in problem["errors"]


def test_a_weak_rsa_key_is_refused_when_the_order_is_placed(stack, loopback_dns):
    admin = open_account(stack.base_url, loopback_dns)
    answer = admin.post("/api/orders/v1/orders",
                        order_body(fermat_weak_key(), f"w-{uuid.uuid4().hex[:8]}.example.com"))
    assert answer.status_code == 422, answer.text
    assert (answer.json()["code"], answer.json()["rule"]) == ("key_blocked", "rsa_fermat")


def test_a_proven_compromise_report_revokes_the_certificate_and_blocks_the_key(stack,
                                                                             loopback_dns):
    """Anyone, with no account, proves possession of the key over the fixed challenge:
    the certificate is revoked (orders shows the order revoked) and the key is refused."""
    import requests
    from chancery_ca_signer.handlers import COMPROMISE_CHALLENGE
    from cryptography.x509.oid import NameOID

    admin = open_account(stack.base_url, loopback_dns)
    key = ec.generate_private_key(ec.SECP256R1())
    name = f"pr-{uuid.uuid4().hex[:8]}.example.com"
    order = admin.post("/api/orders/v1/orders", order_body(key, name)).json()
    if order["status"] == "pending_approval":
        assert admin.post(f"/api/orders/v1/orders/{order['id']}/approve", {}).status_code == 200
    issued = order_status(admin, order["id"], "issued")
    proof = (x509.CertificateSigningRequestBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                         COMPROMISE_CHALLENGE)]))
             .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())

    report = requests.post(f"{stack.base_url}/ca/problem-reports",
                           json={"kind": "key_compromise", "csr": proof}, timeout=30)

    assert report.status_code == 201, report.text
    assert report.json()["revoked_serials"] == [issued["certificate"]["serial"].lower()]
    revoked = order_status(admin, order["id"], "revoked")
    assert revoked["revocation_reason"] == "key_compromise"
    again = wait_for(lambda: (lambda r: [r] if r.status_code != 201 else None)(
        admin.post("/api/orders/v1/orders", order_body(key, name))), timeout=30,
        interval=0.5, message="the reported key to be refused")[0]
    assert (again.status_code, again.json()["code"]) == (422, "key_blocked")
