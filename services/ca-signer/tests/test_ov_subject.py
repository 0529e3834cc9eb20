"""An OV sign command from orders: the organization fields become the certificate's subject.

Driven through the real consumer on a migrated SQLite database with the development
hierarchy (real keys, real linting)."""

from __future__ import annotations

import json
import uuid

import pytest
from chancery_ca_signer.model import messaging
from chancery_ca_signer.service import CaSignerService
from chancery_ca_signer.testing import assert_lints_clean, evidence_for
from chancery_shared.messaging.envelope import Actor, Context, new_envelope
from chancery_shared.testing import make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

ACCOUNT = "acct-" + "1" * 31
OV_POLICY = x509.ObjectIdentifier("2.23.140.1.2.2")
ACME = {"organization_name": "Acme Widgets Inc.", "country": "DE",
        "state_or_province": "Bavaria", "locality": "Munich"}


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    service = CaSignerService(make_runtime(tmp_path_factory.mktemp("signer"),
                                           CHANCERY_PUBLIC_BASE_URL="http://pki.chancery.com"))
    service.migrate()
    service.bootstrap_dev()
    yield service
    service.dispose()


def csr_for(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def sign(service: CaSignerService, profile: str, subject: dict) -> dict:
    order_id = str(uuid.uuid4())
    envelope = new_envelope(
        type="ca_signer.certificate.sign", source="orders",
        context=Context(actor=Actor.service("orders"), account_id=ACCOUNT,
                        correlation_id=order_id),
        subject_type="order", subject_id=order_id, summary="test sign",
        data={"order_id": order_id, "issuance_id": str(uuid.uuid4()),
              "csr_pem": csr_for("www.example.com"), "profile": profile,
              "subject": {"common_name": "www.example.com", **subject},
              "sans": ["www.example.com"], "not_after": None,
              "validations": evidence_for(["www.example.com"], profile)})
    (consumer,) = service.consumers()
    assert consumer.handle(envelope, consumer.handlers[envelope.type])
    with service.engine.connect() as connection:
        rows = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type.like("ca_signer.certificate.%"))).scalars()
        answer = [json.loads(row) for row in rows][-1]
    if answer["type"] == "ca_signer.certificate.issued":
        assert_lints_clean(answer["data"]["certificate_pem"], profile)
    return answer


def test_an_ov_command_issues_a_certificate_naming_the_organization(signer):
    answer = sign(signer, "ov", ACME)

    assert answer["type"] == "ca_signer.certificate.issued", answer["data"]
    certificate = x509.load_pem_x509_certificate(answer["data"]["certificate_pem"].encode())
    subject = certificate.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value \
        == "Acme Widgets Inc."
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    assert subject.get_attributes_for_oid(NameOID.STATE_OR_PROVINCE_NAME)[0].value == "Bavaria"
    assert subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "Munich"
    policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    assert OV_POLICY in [p.policy_identifier for p in policies]


def test_a_dv_command_issues_a_subject_without_organization(signer):
    answer = sign(signer, "dv", {})

    assert answer["type"] == "ca_signer.certificate.issued", answer["data"]
    certificate = x509.load_pem_x509_certificate(answer["data"]["certificate_pem"].encode())
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
