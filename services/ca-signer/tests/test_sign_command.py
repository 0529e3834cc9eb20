"""The sign command, end to end inside the signer: what it refuses, what it issues, once.

Driven through the real consumer (inbox included) and the real
``ca_signer.certificate.sign`` handler on a migrated SQLite database with the development
hierarchy. The CA key's ``sign_certificate`` is wrapped to count real CA signatures (the
pre-issuance lint signs with a throwaway key, which does not count) and, for the crash
tests, to fail once.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chancery_ca_signer import handlers
from chancery_ca_signer.model import IssuedCertificate, messaging
from chancery_ca_signer.pki.keys import EncryptedPemKey
from chancery_ca_signer.service import CaSignerService
from chancery_ca_signer.testing import assert_lints_clean, evidence_for
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope
from chancery_shared.subscriber_keys import spki_sha256
from chancery_shared.testing import make_runtime
from chancery_shared.weak_keys import fermat_weak_key, roca_weak_key
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from sqlalchemy import select

ACCOUNT = "acct-" + "1" * 31
NAME = "www.chancery.com"


# --- the signer under test ------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated database holding the development hierarchy, made once per module."""
    folder = tmp_path_factory.mktemp("sign-template")
    service = CaSignerService(make_runtime(folder,
                                           CHANCERY_PUBLIC_BASE_URL="http://pki.chancery.com"))
    service.migrate()
    service.bootstrap_dev()
    service.dispose()
    return folder / "ca_signer.db"


@pytest.fixture
def signer(tmp_path: Path, template: Path) -> Iterator[CaSignerService]:
    """A fresh signer per test: a copy of the template, so no test sees another's rows."""
    shutil.copyfile(template, tmp_path / "ca_signer.db")
    service = CaSignerService(make_runtime(tmp_path,
                                           CHANCERY_PUBLIC_BASE_URL="http://pki.chancery.com"))
    yield service
    service.dispose()


@dataclass
class CaSignatures:
    """Counts signatures made with a CA key; ``fail`` makes the next one crash."""

    made: int = 0
    fail: str | None = None  # "before" or "after" the CA key signs


class SimulatedCrash(RuntimeError):
    """Stands for the worker dying: nothing after it in the handler runs."""


@pytest.fixture
def ca_signatures(monkeypatch: pytest.MonkeyPatch) -> CaSignatures:
    counter = CaSignatures()
    real_sign = EncryptedPemKey.sign_certificate

    def counting_sign(self: EncryptedPemKey, builder: x509.CertificateBuilder) -> x509.Certificate:
        crash, counter.fail = counter.fail, None
        if crash == "before":
            raise SimulatedCrash("worker died before the CA key signed")
        certificate = real_sign(self, builder)
        counter.made += 1
        if crash == "after":
            raise SimulatedCrash("worker died after the CA key signed")
        return certificate

    monkeypatch.setattr(EncryptedPemKey, "sign_certificate", counting_sign)
    return counter


# --- helpers ---------------------------------------------------------------------------


def csr_pem(key: object, names: tuple[str, ...] = (NAME,)) -> str:
    """A CSR for ``names`` signed by ``key`` (Ed25519 signs without a separate hash)."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                          critical=False)
           .sign(key, algorithm))  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tampered_csr_pem() -> str:
    """A well-formed CSR whose signature no longer matches its content."""
    good = csr_pem(ec.generate_private_key(ec.SECP256R1()), ("aaaa.chancery.com",))
    der = x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER)
    altered = der.replace(b"aaaa.chancery.com", b"bbbb.chancery.com")
    assert altered != der
    return x509.load_der_x509_csr(altered).public_bytes(serialization.Encoding.PEM).decode()


def sign_command(csr: str, *, order_id: str | None = None,
                 issuance_id: str | None = None, account_id: str = ACCOUNT) -> Envelope:
    order_id = order_id or str(uuid.uuid4())
    return new_envelope(
        type="ca_signer.certificate.sign", source="orders",
        context=Context(actor=Actor.service("orders"), account_id=account_id,
                        correlation_id=order_id),
        subject_type="order", subject_id=order_id, summary="test sign",
        data={"order_id": order_id, "issuance_id": issuance_id or str(uuid.uuid4()),
              "csr_pem": csr, "profile": "dv", "subject": {"common_name": NAME},
              "sans": [NAME], "not_after": None, "validations": evidence_for([NAME])})


def deliver(service: CaSignerService, envelope: Envelope) -> bool:
    """Hand ``envelope`` to the signer's consumer as the broker would; False if a repeat."""
    (consumer,) = service.consumers()
    return consumer.handle(envelope, consumer.handlers[envelope.type])


def outbox(service: CaSignerService, type: str) -> list[dict]:
    with service.engine.connect() as connection:
        rows = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == type).order_by(messaging.outbox.c.seq)).scalars()
        return [json.loads(row) for row in rows]


def records(service: CaSignerService, order_id: str) -> list[IssuedCertificate]:
    with service.uow() as uow:
        rows = list(uow.session.execute(select(IssuedCertificate).where(
            IssuedCertificate.order_id == order_id)).scalars())
        uow.session.expunge_all()
        return rows


# --- refused CSRs ----------------------------------------------------------------------

REFUSED: list[tuple[str, Callable[[], str], str]] = [
    ("RSA 1024", lambda: csr_pem(rsa.generate_private_key(65537, 1024)),
     "RSA key is 1024 bits; at least 2048"),
    ("RSA 2047", lambda: csr_pem(rsa.generate_private_key(65537, 2047)),
     "RSA key is 2047 bits; at least 2048"),
    ("RSA 2052, not a multiple of 8", lambda: csr_pem(rsa.generate_private_key(65537, 2052)),
     "RSA key is 2052 bits, which is not a multiple of 8"),
    ("ECDSA P-192", lambda: csr_pem(ec.generate_private_key(ec.SECP192R1())),
     "curve secp192r1 is not allowed"),
    ("ECDSA secp256k1", lambda: csr_pem(ec.generate_private_key(ec.SECP256K1())),
     "curve secp256k1 is not allowed"),
    ("DSA", lambda: csr_pem(dsa.generate_private_key(2048)), "DSA keys are not allowed"),
    ("Ed25519", lambda: csr_pem(ed25519.Ed25519PrivateKey.generate()),
     "Ed25519 keys are not allowed"),
    ("signature does not verify", tampered_csr_pem, "CSR signature does not verify"),
    ("RSA primes close together", lambda: csr_pem(fermat_weak_key()),
     "key_blocked (rsa_fermat): the RSA key's primes are so close together"),
    ("RSA key vulnerable to ROCA", lambda: csr_pem(roca_weak_key()),
     "key_blocked (rsa_roca): the RSA key was made by a generator vulnerable to ROCA"),
]


@pytest.mark.parametrize(("make_csr", "reason"), [(make, reason) for _, make, reason in REFUSED],
                         ids=[label for label, _, _ in REFUSED])
def test_a_refused_csr_is_rejected_once_with_its_reason_and_nothing_is_signed(
        signer, ca_signatures, make_csr, reason):
    command = sign_command(make_csr())
    order_id = command.data["order_id"]

    assert deliver(signer, command)  # handled: a refusal is an answer, not a retry

    [rejected] = outbox(signer, "ca_signer.certificate.rejected")
    assert rejected["data"]["order_id"] == order_id
    assert rejected["data"]["issuance_id"] == command.data["issuance_id"]
    assert reason in rejected["data"]["reason"]
    assert reason in rejected["summary"]
    assert outbox(signer, "ca_signer.certificate.issued") == []
    assert [r.status for r in records(signer, order_id)] in ([], ["rejected"])
    assert ca_signatures.made == 0


# --- issued CSRs -----------------------------------------------------------------------


@pytest.mark.parametrize("make_key", [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: rsa.generate_private_key(65537, 2048),
], ids=["ECDSA P-256", "RSA 2048"])
def test_an_acceptable_csr_is_issued_for_the_key_it_carries(signer, ca_signatures, make_key):
    key = make_key()
    command = sign_command(csr_pem(key))

    assert deliver(signer, command)

    [issued] = outbox(signer, "ca_signer.certificate.issued")
    assert outbox(signer, "ca_signer.certificate.rejected") == []
    certificate = x509.load_pem_x509_certificate(issued["data"]["certificate_pem"].encode())
    assert certificate.public_key() == key.public_key()
    assert_lints_clean(issued["data"]["certificate_pem"], "dv")
    [record] = records(signer, command.data["order_id"])
    assert (record.status, record.serial) == ("issued", issued["data"]["serial"])
    assert certificate.serial_number == int(record.serial, 16)
    assert ca_signatures.made == 1


def test_the_same_command_delivered_twice_is_applied_once(signer, ca_signatures):
    command = sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1())))

    assert deliver(signer, command)
    assert not deliver(signer, command)  # the inbox knows this event id

    [issued] = outbox(signer, "ca_signer.certificate.issued")
    [record] = records(signer, command.data["order_id"])
    assert record.serial == issued["data"]["serial"]
    assert ca_signatures.made == 1


def test_a_resent_command_for_the_same_issuance_reannounces_the_same_certificate(
        signer, ca_signatures):
    first = sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1())))
    again = sign_command(first.data["csr_pem"], order_id=first.data["order_id"],
                         issuance_id=first.data["issuance_id"])
    assert again.event_id != first.event_id  # a new message: the inbox does not stop it

    assert deliver(signer, first)
    assert deliver(signer, again)

    announced = outbox(signer, "ca_signer.certificate.issued")
    assert len(announced) == 2
    assert announced[0]["data"] == announced[1]["data"]  # same serial, same certificate
    [record] = records(signer, first.data["order_id"])
    assert record.serial == announced[0]["data"]["serial"]
    assert ca_signatures.made == 1


# --- a worker that dies while signing ---------------------------------------------------


@pytest.mark.parametrize("crash", ["before", "after"],
                         ids=["before the CA key signs", "after the CA key signed"])
def test_a_redelivery_after_a_crash_issues_one_certificate_with_the_recorded_serial(
        signer, ca_signatures, crash):
    command = sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1())))
    order_id = command.data["order_id"]
    ca_signatures.fail = crash

    with pytest.raises(SimulatedCrash):
        deliver(signer, command)  # the broker gets no ack and will deliver it again

    [intent] = records(signer, order_id)
    assert intent.status == "signing"  # the intent (serial reserved) outlived the crash
    assert outbox(signer, "ca_signer.certificate.issued") == []

    assert deliver(signer, command)

    [record] = records(signer, order_id)
    assert (record.status, record.serial) == ("issued", intent.serial)
    [issued] = outbox(signer, "ca_signer.certificate.issued")
    assert issued["data"]["serial"] == intent.serial
    certificate = x509.load_pem_x509_certificate(issued["data"]["certificate_pem"].encode())
    assert certificate.serial_number == int(intent.serial, 16)
    assert outbox(signer, "ca_signer.certificate.rejected") == []


# --- keys reported compromised -----------------------------------------------------------


def revoke_command(serial: str, reason: str, account_id: str = ACCOUNT) -> Envelope:
    return new_envelope(
        type="ca_signer.certificate.revoke", source="orders",
        context=Context(actor=Actor(user_id="u-1", user_name="Ada Admin"),
                        account_id=account_id),
        subject_type="certificate", subject_id=serial, summary="test revoke",
        data={"serial": serial, "reason": reason})


def test_a_key_revoked_for_compromise_is_never_signed_again_for_anyone(signer, ca_signatures):
    key = ec.generate_private_key(ec.SECP256R1())
    first = sign_command(csr_pem(key))
    assert deliver(signer, first)
    [issued] = outbox(signer, "ca_signer.certificate.issued")

    assert deliver(signer, revoke_command(issued["data"]["serial"], "key_compromise"))

    [blocked] = outbox(signer, "ca_signer.key.blocked")
    spki = spki_sha256(key.public_key())
    assert blocked["data"] == {"spki_sha256": spki, "reason": "key_compromise",
                               "source": "revocation", "serial": issued["data"]["serial"]}
    assert blocked["account_id"] == ACCOUNT
    made = ca_signatures.made
    again = sign_command(csr_pem(key), account_id="acct-" + "2" * 31)  # another customer
    assert deliver(signer, again)
    [rejected] = outbox(signer, "ca_signer.certificate.rejected")
    assert rejected["data"]["order_id"] == again.data["order_id"]
    assert rejected["data"]["reason"].startswith("key_blocked (compromised): ")
    assert ca_signatures.made == made  # nothing more was signed
    # another key is still signed
    assert deliver(signer, sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1()))))
    assert len(outbox(signer, "ca_signer.certificate.issued")) == 2


def test_revocations_for_other_reasons_block_nothing(signer):
    key = ec.generate_private_key(ec.SECP256R1())
    assert deliver(signer, sign_command(csr_pem(key)))
    [issued] = outbox(signer, "ca_signer.certificate.issued")
    assert deliver(signer, revoke_command(issued["data"]["serial"], "superseded"))
    assert outbox(signer, "ca_signer.key.blocked") == []
    assert deliver(signer, sign_command(csr_pem(key)))
    assert len(outbox(signer, "ca_signer.certificate.issued")) == 2


def test_a_second_compromise_report_of_the_same_key_is_announced_once(signer):
    key = ec.generate_private_key(ec.SECP256R1())
    for _ in range(2):
        assert deliver(signer, sign_command(csr_pem(key)))
    first, second = outbox(signer, "ca_signer.certificate.issued")
    for issued in (first, second):
        assert deliver(signer, revoke_command(issued["data"]["serial"], "key_compromise"))
    assert len(outbox(signer, "ca_signer.key.blocked")) == 1


def test_a_p521_key_is_refused_unless_the_curve_is_configured(signer, ca_signatures, tmp_path):
    key = ec.generate_private_key(ec.SECP521R1())
    assert deliver(signer, sign_command(csr_pem(key)))
    [rejected] = outbox(signer, "ca_signer.certificate.rejected")
    assert "P-521 is not allowed; use P-256, P-384" in rejected["data"]["reason"]
    assert ca_signatures.made == 0
    signer.platform = dataclasses.replace(signer.platform, subscriber_curves=("P-384", "P-521"))
    assert deliver(signer, sign_command(csr_pem(key)))
    assert len(outbox(signer, "ca_signer.certificate.issued")) == 1


# --- validation evidence, judged on the signing day (BR 4.2.1) --------------------------

def sign_at(signer: CaSignerService, envelope: Envelope, now: datetime) -> None:
    """Run the sign handler with the clock at ``now`` (what the consumer does, minus the
    inbox), then commit."""
    with signer.uow() as uow:
        handlers.sign_certificate(envelope, uow, signer.keys, "http://pki.chancery.com",
                                  now=now)
        uow.commit()


def with_evidence(envelope: Envelope, validations: list[dict]) -> Envelope:
    return dataclasses.replace(envelope, data={**envelope.data, "validations": validations})


@pytest.mark.parametrize(("signing_day", "issued"), [
    (datetime(2027, 3, 1, tzinfo=UTC), True),    # 200 days allowed: 150 is fine
    (datetime(2027, 3, 16, tzinfo=UTC), False),  # 100 days allowed from 2027-03-15
])
def test_a_150_day_old_validation_is_judged_by_the_rule_of_the_signing_day(
        signer, signing_day, issued):
    command = sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1())))
    command = with_evidence(command, evidence_for(
        [NAME], validated_at=signing_day - timedelta(days=150)))

    sign_at(signer, command, signing_day)

    ok = outbox(signer, "ca_signer.certificate.issued")
    refused = outbox(signer, "ca_signer.certificate.rejected")
    if issued:
        assert len(ok) == 1 and refused == []
    else:
        [rejection] = refused
        assert ok == []
        assert rejection["data"]["code"] == "validation_expired"
        assert rejection["data"]["names"] == [NAME]
        assert "2027-03-16" in rejection["data"]["reason"]
        assert "100 days" in rejection["data"]["reason"]
        assert records(signer, command.data["order_id"]) == []  # no serial, no intent


@pytest.mark.parametrize("evidence", [
    pytest.param([], id="none"),
    pytest.param([{"kind": "domain", "name": "example.org", "method": "dns-txt",
                   "validated_at": "2026-12-01T00:00:00+00:00", "names": ["www.example.org"]}],
                 id="for another name"),
    pytest.param([{"kind": "domain", "name": "chancery.com", "method": "dns-txt",
                   "validated_at": "not a date", "names": [NAME]}], id="unreadable date"),
    pytest.param([{"kind": "domain", "name": "chancery.com", "method": "dns-txt",
                   "validated_at": "2099-01-01T00:00:00+00:00", "names": [NAME]}],
                 id="from the future"),
])
def test_a_public_certificate_without_fresh_evidence_for_every_name_is_refused(
        signer, evidence):
    command = with_evidence(sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1()))),
                            evidence)
    assert deliver(signer, command)
    assert outbox(signer, "ca_signer.certificate.issued") == []
    [rejection] = outbox(signer, "ca_signer.certificate.rejected")
    assert rejection["data"]["code"] == "validation_expired"


def test_an_ov_certificate_needs_the_organizations_evidence_too(signer):
    command = sign_command(csr_pem(ec.generate_private_key(ec.SECP256R1())))
    command = dataclasses.replace(command, data={
        **command.data, "profile": "ov",
        "subject": {"common_name": NAME, "organization_name": "Example Corp",
                    "locality": "Austin", "state_or_province": "Texas", "country": "US"},
        "validations": evidence_for([NAME], "dv")})  # the domain's only
    assert deliver(signer, command)
    [rejection] = outbox(signer, "ca_signer.certificate.rejected")
    assert rejection["data"]["organization"] is True
    assert rejection["data"]["names"] == []


def test_the_signer_refuses_a_debian_weak_key_from_the_installed_lists(signer, tmp_path):
    from chancery_shared.subscriber_keys import debian_fingerprint, load_debian_weak_keys

    key = rsa.generate_private_key(65537, 2048)
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "blacklist.RSA-2048").write_text(
        debian_fingerprint(key.public_key().public_numbers().n) + "\n")
    command = sign_command(csr_pem(key))
    with signer.uow() as uow:
        handlers.sign_certificate(command, uow, signer.keys, "http://pki.chancery.com",
                                  debian_weak_keys=load_debian_weak_keys(str(folder)))
        uow.commit()
    [rejection] = outbox(signer, "ca_signer.certificate.rejected")
    assert rejection["data"]["reason"].startswith("key_blocked (debian_weak)")
    assert outbox(signer, "ca_signer.certificate.issued") == []
