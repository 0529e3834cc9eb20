"""CRLs and OCSP: what the signer publishes about revoked certificates, and to whom.

Driven through the real consumer (sign and revoke commands) and the Flask test client
without a token, on a migrated SQLite database with the development hierarchy.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from chancery_ca_signer import handlers
from chancery_ca_signer.model import Issuer, messaging
from chancery_ca_signer.pki.crl import RevokedEntry, build_crl
from chancery_ca_signer.service import CaSignerService
from chancery_ca_signer.testing import assert_lints_clean, evidence_for
from chancery_shared.messaging.envelope import Actor, Context, new_envelope
from chancery_shared.testing import make_runtime, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import select

ACCOUNT = "acct-" + "1" * 31


def csr_for(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def command(service: CaSignerService, type: str, data: dict, order_id: str) -> None:
    envelope = new_envelope(
        type=type, source="orders",
        context=Context(actor=Actor.service("orders"), account_id=ACCOUNT,
                        correlation_id=order_id),
        subject_type="order", subject_id=order_id, summary="test", data=data)
    (consumer,) = service.consumers()
    assert consumer.handle(envelope, consumer.handlers[envelope.type])


def outbox(service: CaSignerService, type: str) -> list[dict]:
    with service.engine.connect() as connection:
        rows = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == type).order_by(messaging.outbox.c.seq)).scalars()
        return [json.loads(row) for row in rows]


def issue(service: CaSignerService, name: str) -> x509.Certificate:
    order_id = str(uuid.uuid4())
    command(service, "ca_signer.certificate.sign",
            {"order_id": order_id, "issuance_id": str(uuid.uuid4()), "csr_pem": csr_for(name),
             "profile": "dv", "subject": {"common_name": name}, "sans": [name],
             "not_after": None, "validations": evidence_for([name])}, order_id)
    [answer] = [e for e in outbox(service, "ca_signer.certificate.issued")
                if e["data"]["order_id"] == order_id]
    assert_lints_clean(answer["data"]["certificate_pem"], "dv")
    return x509.load_pem_x509_certificate(answer["data"]["certificate_pem"].encode())


def revoke(service: CaSignerService, certificate: x509.Certificate, reason: str) -> None:
    command(service, "ca_signer.certificate.revoke",
            {"serial": format(certificate.serial_number, "x"), "reason": reason},
            str(uuid.uuid4()))


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signer")
    service = CaSignerService(make_runtime(folder,
                                           CHANCERY_PUBLIC_BASE_URL="http://pki.chancery.com"))
    service.migrate()
    service.bootstrap_dev()
    with service.uow() as uow:
        issuers = {i.kind: i for i in uow.session.execute(  # the public hierarchy signs dv
            select(Issuer).where(Issuer.hierarchy == "public")).scalars()}
        root_pem, issuing_pem = issuers["root"].certificate_pem, issuers["issuing"].certificate_pem
        root_id, issuing_id = issuers["root"].id, issuers["issuing"].id
    good, revoked = issue(service, "good.chancery.com"), issue(service, "revoked.chancery.com")
    revoke(service, revoked, "key_compromise")
    chain = folder / "chain.pem"
    chain.write_text(issuing_pem + root_pem)
    yield SimpleNamespace(
        service=service, client=service.create_app().test_client(), good=good, revoked=revoked,
        root=x509.load_pem_x509_certificate(root_pem.encode()), root_id=root_id,
        issuing=x509.load_pem_x509_certificate(issuing_pem.encode()), issuing_id=issuing_id,
        chain=chain, folder=folder)
    service.dispose()


def fetch_crl(ca, issuer_id: str) -> x509.CertificateRevocationList:
    response = ca.client.get(f"/ca/crl/{issuer_id}.crl")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/pkix-crl"
    return x509.load_der_x509_crl(response.data)


def test_the_crl_lists_the_revoked_certificate_with_its_reason_signed_by_the_issuer(ca):
    crl = fetch_crl(ca, ca.issuing_id)  # no token, and none published yet: built now

    assert crl.is_signature_valid(ca.issuing.public_key())
    assert crl.issuer == ca.issuing.subject
    entry = crl.get_revoked_certificate_by_serial_number(ca.revoked.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason \
        == x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(ca.good.serial_number) is None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)  # BR: <= 10 days
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number >= 1
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.issuing.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest


def test_the_crl_is_cacheable_until_at_most_its_next_update(ca):
    response = ca.client.get(f"/ca/crl/{ca.issuing_id}.crl")

    max_age = int(response.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 3600
    again = ca.client.get(f"/ca/crl/{ca.issuing_id}.crl",
                          headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304


def test_the_root_crl_is_signed_by_the_root_and_lists_no_issuing_ca(ca):
    crl = fetch_crl(ca, ca.root_id)

    assert crl.is_signature_valid(ca.root.public_key())
    assert len(crl) == 0


def test_an_unknown_issuer_has_no_crl(ca):
    response = ca.client.get("/ca/crl/0123456789abcdef.crl")

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_openssl_verifies_the_crl_against_the_chain_and_finds_the_revoked_serial(ca):
    path = ca.folder / "issuing.crl"
    path.write_bytes(ca.client.get(f"/ca/crl/{ca.issuing_id}.crl").data)

    result = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(path), "-CAfile",
                             str(ca.chain), "-noout", "-text"],
                            capture_output=True, text=True, check=True)
    assert "verify OK" in result.stderr + result.stdout
    assert format(ca.revoked.serial_number, "X").rjust(2, "0") in result.stdout.upper()
    assert "Key Compromise" in result.stdout


def test_a_revocation_makes_the_job_republish_with_the_next_number(ca):
    before = fetch_crl(ca, ca.issuing_id).extensions.get_extension_for_class(
        x509.CRLNumber).value.crl_number
    ca.service.publish_due_crls()  # anything already due (the root's first CRL, say)
    third = issue(ca.service, "third.chancery.com")
    revoke(ca.service, third, "unspecified")

    published = ca.service.publish_due_crls()

    assert (ca.issuing_id, before + 1) in published
    assert ca.service.publish_due_crls() == []  # nothing is stale any more
    crl = fetch_crl(ca, ca.issuing_id)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == before + 1
    entry = crl.get_revoked_certificate_by_serial_number(third.serial_number)
    assert entry is not None and len(entry.extensions) == 0  # unspecified: no reason
    event = outbox(ca.service, "ca_signer.crl.published")[-1]
    assert event["data"] == {"issuer_id": ca.issuing_id, "number": before + 1, "entries": 2}
    assert "published CRL number" in event["summary"]


def test_a_day_old_crl_is_republished_without_a_revocation(ca):
    with ca.service.uow() as uow:
        latest = handlers.latest_crl(uow, ca.issuing_id).number

    published = handlers.publish_due_crls(ca.service.uow, ca.service.keys,
                                          datetime.now(UTC) + timedelta(hours=25))

    assert (ca.issuing_id, latest + 1) in published


def test_a_crl_of_100000_entries_builds_and_signs(ca, capsys):
    with ca.service.uow() as uow:
        key = ca.service.keys.key_for(uow.session.get(Issuer, ca.issuing_id))
    now = datetime.now(UTC).replace(microsecond=0)
    entries = [RevokedEntry(x509.random_serial_number(), now - timedelta(seconds=i % 86400),
                            ("key_compromise", "superseded", "unspecified")[i % 3])
               for i in range(100_000)]

    started = time.perf_counter()
    crl = build_crl(ca.issuing, key, entries, 7, now)
    elapsed = time.perf_counter() - started

    with capsys.disabled():
        print(f"\n100,000-entry CRL built and signed in {elapsed:.3f} s")
    assert len(crl) == 100_000
    assert crl.is_signature_valid(ca.issuing.public_key())
    assert crl[99_999].serial_number == entries[99_999].serial


# --- OCSP ------------------------------------------------------------------------------


def ocsp_request(certificate: x509.Certificate, issuer: x509.Certificate) -> bytes:
    return (ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1())
            .build().public_bytes(serialization.Encoding.DER))


def unknown_serial_request(leaf: x509.Certificate, issuer: x509.Certificate) -> bytes:
    """The same issuer as ``leaf``'s, a serial nobody issued."""
    template = ocsp.load_der_ocsp_request(ocsp_request(leaf, issuer))
    return (ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        template.issuer_name_hash, template.issuer_key_hash, x509.random_serial_number(),
        hashes.SHA1()).build().public_bytes(serialization.Encoding.DER))


def ask(ca, der: bytes, method: str):
    if method == "POST":
        response = ca.client.post("/ca/ocsp", data=der,
                                  headers={"Content-Type": "application/ocsp-request"})
    elif method == "GET":
        response = ca.client.get("/ca/ocsp/" + quote(base64.b64encode(der).decode(), safe=""))
    else:  # URL-safe base64, unpadded
        response = ca.client.get("/ca/ocsp/" + base64.urlsafe_b64encode(der).decode()
                                 .rstrip("="))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/ocsp-response"
    return response, ocsp.load_der_ocsp_response(response.data)


def verify_signature(answer: ocsp.OCSPResponse, issuer: x509.Certificate) -> None:
    """Signed by a delegated responder: its certificate travels in the answer, was issued
    by ``issuer`` for OCSP signing only, and its key made the signature."""
    [responder] = answer.certificates
    responder.verify_directly_issued_by(issuer)
    assert (responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            == x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING]))
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert answer.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
        responder.public_key()).digest
    key = responder.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(),
                   answer.signature_hash_algorithm)
    else:
        key.verify(answer.signature, answer.tbs_response_bytes,
                   ec.ECDSA(answer.signature_hash_algorithm))


METHODS = ["POST", "GET", "GET-urlsafe"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("which, expected", [
    ("good", ocsp.OCSPCertStatus.GOOD),
    ("revoked", ocsp.OCSPCertStatus.REVOKED),
    ("never issued", ocsp.OCSPCertStatus.UNKNOWN),
])
def test_ocsp_answers_each_serial_with_what_the_records_say(ca, method, which, expected):
    der = unknown_serial_request(ca.good, ca.issuing) if which == "never issued" else \
        ocsp_request(getattr(ca, which), ca.issuing)

    _, answer = ask(ca, der, method)

    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == expected
    verify_signature(answer, ca.issuing)  # by the delegated responder, not the CA key
    assert answer.responder_key_hash != ca.issuing.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    assert timedelta(hours=8) <= answer.next_update_utc - answer.this_update_utc \
        <= timedelta(days=10)
    if expected == ocsp.OCSPCertStatus.REVOKED:
        assert answer.revocation_reason == x509.ReasonFlags.key_compromise
        assert answer.revocation_time_utc is not None


def test_ocsp_get_answers_are_cacheable_and_post_answers_are_not(ca):
    der = ocsp_request(ca.good, ca.issuing)

    get, _ = ask(ca, der, "GET")
    post, _ = ask(ca, der, "POST")

    assert "max-age=3600" in get.headers["Cache-Control"]
    assert get.headers["ETag"] and get.headers["Expires"] and get.headers["Last-Modified"]
    assert post.headers["Cache-Control"] == "no-store"


def test_last_modified_is_the_answers_this_update_and_unknown_is_cached_briefly(ca):
    from email.utils import parsedate_to_datetime

    for which in ("good", "never issued"):
        der = unknown_serial_request(ca.good, ca.issuing) if which == "never issued" else \
            ocsp_request(ca.good, ca.issuing)
        get, answer = ask(ca, der, "GET")
        assert parsedate_to_datetime(get.headers["Last-Modified"]) == answer.this_update_utc
        max_age = int(get.headers["Cache-Control"].split("max-age=")[1].split(",")[0])
        if which == "good":
            assert max_age == 3600
        else:
            assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN
            assert 0 < max_age <= 60


@pytest.mark.parametrize("method, body", [
    ("POST", b"not an ocsp request"),
    ("POST", b""),
    ("GET", b"\x30\x03\x02\x01\x01"),
])
def test_a_malformed_request_gets_a_malformed_request_answer(ca, method, body):
    _, answer = ask(ca, body, method)

    assert answer.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_get_that_is_not_base64_gets_a_malformed_request_answer(ca):
    response = ca.client.get("/ca/ocsp/not*base64!")

    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.data).response_status \
        == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_request_about_another_ca_is_unauthorized(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody Else's CA")])
    now = datetime.now(UTC)
    stranger = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1).not_valid_before(now)
                .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))

    for method in METHODS:
        _, answer = ask(ca, ocsp_request(stranger, stranger), method)
        assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("which, status", [("revoked", "revoked"), ("good", "good"),
                                           ("never issued", "unknown")])
def test_openssl_ocsp_verifies_the_answer_through_the_delegated_responder(ca, which, status):
    certificate = ca.good if which == "good" else ca.revoked
    if which == "never issued":  # names our issuer, with a serial we never issued
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        stranger = (x509.CertificateBuilder().subject_name(ca.good.subject)
                    .issuer_name(ca.issuing.subject).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now)
                    .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
        certificate = stranger
    pem = ca.folder / f"{status}.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    issuing = ca.folder / "issuing.pem"
    issuing.write_bytes(ca.issuing.public_bytes(serialization.Encoding.PEM))
    request = ca.folder / "request.der"
    subprocess.run(["openssl", "ocsp", "-issuer", str(issuing), "-cert", str(pem), "-no_nonce",
                    "-reqout", str(request)], capture_output=True, check=True)
    response = ca.folder / "response.der"
    response.write_bytes(ca.client.post("/ca/ocsp", data=request.read_bytes()).data)

    result = subprocess.run(["openssl", "ocsp", "-respin", str(response), "-issuer",
                             str(issuing), "-cert", str(pem), "-CAfile", str(ca.chain)],
                            capture_output=True, text=True)
    assert "Response verify OK" in result.stderr + result.stdout, result.stderr
    assert f"{pem}: {status}" in result.stdout, result.stdout
    if status == "revoked":
        assert "Reason: keyCompromise" in result.stdout



def pkilint(tool: str, *args: str) -> str:
    result = subprocess.run([str(Path(sys.executable).parent / tool), "lint", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_pkilint_finds_nothing_wrong_with_the_crl_or_the_ocsp_answers(ca):
    crl = ca.folder / "lint.crl"
    crl.write_bytes(ca.client.get(f"/ca/crl/{ca.issuing_id}.crl").data)
    assert pkilint("lint_crl", "-t", "CRL", "-p", "BR", str(crl)) == ""
    for certificate in (ca.good, ca.revoked):
        answer = ca.folder / "lint.ocsp"
        answer.write_bytes(ask(ca, ocsp_request(certificate, ca.issuing), "POST")[0].data)
        assert pkilint("lint_ocsp_response", str(answer)) == ""


def test_a_request_hashed_with_sha256_is_answered_too(ca):
    der = (ocsp.OCSPRequestBuilder().add_certificate(ca.revoked, ca.issuing, hashes.SHA256())
           .build().public_bytes(serialization.Encoding.DER))

    _, answer = ask(ca, der, "POST")

    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert isinstance(answer.hash_algorithm, hashes.SHA256)


def test_the_background_job_publishes_a_revocation_on_its_own(ca):
    crl_job, mail_job = ca.service.background_jobs()
    assert mail_job == ca.service._operator_mail_job  # (the other job: problem reports)
    job = crl_job
    fourth = issue(ca.service, "fourth.chancery.com")
    revoke(ca.service, fourth, "superseded")
    stop = threading.Event()
    runner = threading.Thread(target=job, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: fetch_crl(ca, ca.issuing_id).get_revoked_certificate_by_serial_number(
            fourth.serial_number), message="the revocation on the CRL")
    finally:
        stop.set()
        runner.join(timeout=5)
    assert not runner.is_alive()


# --- delegated responders and the answer cache ----------------------------------------


def responders(ca) -> list:
    from chancery_ca_signer.model import OcspResponder

    with ca.service.uow() as uow:
        return [(r.id, handlers.as_utc(r.not_after)) for r in uow.session.execute(
            select(OcspResponder).where(OcspResponder.issuer_id == ca.issuing_id)
            .order_by(OcspResponder.not_after)).scalars()]


def test_the_responder_certificate_passes_pkilint_as_an_ocsp_responder(ca):
    from chancery_ca_signer.pki.lint import lint_certificate

    [responder] = ask(ca, ocsp_request(ca.good, ca.issuing), "POST")[1].certificates
    report = lint_certificate(responder.public_bytes(serialization.Encoding.DER),
                              "OCSP_RESPONDER")
    assert report.ok, report.summary()
    assert responder.not_valid_after_utc - responder.not_valid_before_utc <= timedelta(days=30)


def test_a_repeated_question_gets_the_cached_answer_until_it_is_due_for_refresh(ca):
    der = ocsp_request(ca.good, ca.issuing)
    now = datetime.now(UTC)
    with ca.service.uow() as uow:
        first = handlers.ocsp_answer(uow, ca.service.keys, der, now)
    with ca.service.uow() as uow:
        again = handlers.ocsp_answer(uow, ca.service.keys, der, now + timedelta(hours=2))
    with ca.service.uow() as uow:
        refreshed = handlers.ocsp_answer(uow, ca.service.keys, der,
                                         now + handlers.OCSP_REFRESH_AFTER + timedelta(hours=1))

    assert again.der == first.der
    assert refreshed.der != first.der
    assert (ocsp.load_der_ocsp_response(refreshed.der).this_update_utc
            > ocsp.load_der_ocsp_response(first.der).this_update_utc)


def test_a_revocation_replaces_the_cached_good_answer_at_once(ca):
    certificate = issue(ca.service, "cached.chancery.com")
    der = ocsp_request(certificate, ca.issuing)
    assert ask(ca, der, "POST")[1].certificate_status == ocsp.OCSPCertStatus.GOOD

    revoke(ca.service, certificate, "superseded")

    _, answer = ask(ca, der, "POST")
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.superseded


def test_the_job_renews_the_responder_before_it_runs_out_and_answers_use_the_new_one(ca):
    ask(ca, ocsp_request(ca.good, ca.issuing), "POST")  # makes sure one responder exists
    [(current, not_after)] = responders(ca)[-1:]
    # (the private hierarchy's issuing CA gets its first responder here, if it had none)
    assert ca.issuing_id not in handlers.renew_ocsp_responders(
        ca.service.uow, ca.service.keys, datetime.now(UTC))

    later = not_after - timedelta(days=9)  # inside the renewal window
    assert ca.issuing_id in handlers.renew_ocsp_responders(ca.service.uow, ca.service.keys,
                                                           later)

    newest, _ = responders(ca)[-1]
    assert newest != current
    with ca.service.uow() as uow:
        answer = handlers.ocsp_answer(uow, ca.service.keys,
                                      ocsp_request(ca.revoked, ca.issuing), later)
    [signer] = ocsp.load_der_ocsp_response(answer.der).certificates
    assert handlers.issuer_id_of(signer) == newest
