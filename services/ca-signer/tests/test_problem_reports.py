"""Certificate problem reports (BR 4.9.3): anyone may report, no account needed.

A key compromise proven with a CSR signed by the key over the fixed challenge blocks the
key and revokes every unexpired certificate for it at once, in every account; other
reports wait for the platform operator, who lists them. Driven over HTTP (the public
route and the operator's list) on a signer with the development hierarchy, with
certificates issued through the real sign command.
"""

from __future__ import annotations

import pytest
from chancery_ca_signer.handlers import COMPROMISE_CHALLENGE
from chancery_shared.subscriber_keys import spki_sha256
from chancery_shared.testing import TokenFactory, make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .test_sign_command import (  # noqa: F401 - template is a fixture
    csr_pem,
    deliver,
    outbox,
    revoke_command,
    sign_command,
    template,
)

REPORTS = "/ca/problem-reports"
OTHER_ACCOUNT = "acct-" + "2" * 31


@pytest.fixture
def signer(tmp_path, template):  # noqa: F811 - the imported fixture
    import shutil

    from chancery_ca_signer.service import CaSignerService

    shutil.copyfile(template, tmp_path / "ca_signer.db")
    tokens = TokenFactory()
    service = CaSignerService(make_runtime(tmp_path, tokens,
                                           CHANCERY_PUBLIC_BASE_URL="http://pki.chancery.com"))
    service.tokens = tokens
    yield service
    service.dispose()


def challenge_csr(key, subject: str = COMPROMISE_CHALLENGE) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def issue(signer, key, account_id=None) -> str:
    command = sign_command(csr_pem(key), **({"account_id": account_id} if account_id else {}))
    assert deliver(signer, command)
    issued = [m for m in outbox(signer, "ca_signer.certificate.issued")
              if m["data"]["order_id"] == command.data["order_id"]]
    return issued[0]["data"]["serial"]


def test_a_proven_key_compromise_revokes_every_certificate_and_blocks_the_key(signer):
    key, bystander = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    serials = {issue(signer, key), issue(signer, key, OTHER_ACCOUNT)}
    kept = issue(signer, bystander)
    client = signer.create_app().test_client()

    answer = client.post(REPORTS, json={"kind": "key_compromise", "csr": challenge_csr(key),
                                        "email": "finder@example.net"})

    assert answer.status_code == 201, answer.json
    assert answer.json["status"] == "resolved"
    assert set(answer.json["revoked_serials"]) == serials
    assert answer.json["spki_sha256"] == spki_sha256(key.public_key())
    revoked = outbox(signer, "ca_signer.certificate.revoked")
    assert {m["data"]["serial"] for m in revoked} == serials
    assert {m["data"]["reason"] for m in revoked} == {"key_compromise"}
    assert {m["account_id"] for m in revoked} == {"acct-" + "1" * 31, OTHER_ACCOUNT}
    [blocked] = outbox(signer, "ca_signer.key.blocked")
    assert blocked["data"]["source"] == "problem_report"
    [reported] = outbox(signer, "ca_signer.problem.reported")
    assert reported["data"]["kind"] == "key_compromise"
    # the key is never certified again; the bystander's certificate is untouched
    assert deliver(signer, sign_command(csr_pem(key)))
    assert outbox(signer, "ca_signer.certificate.rejected")[-1]["data"]["reason"].startswith(
        "key_blocked (compromised)")
    assert kept not in {m["data"]["serial"] for m in revoked}


@pytest.mark.parametrize(("make_csr", "words"), [
    (lambda key: challenge_csr(key, "www.example.com"), "must have the subject CN="),
    (lambda key: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
     "is not a PEM certificate signing request"),
    (lambda key: None, "a key compromise is proven with a CSR"),
])
def test_a_report_without_proof_changes_nothing(signer, make_csr, words):
    key = ec.generate_private_key(ec.SECP256R1())
    issue(signer, key)
    client = signer.create_app().test_client()
    body = {"kind": "key_compromise"}
    if make_csr(key) is not None:
        body["csr"] = make_csr(key)
    answer = client.post(REPORTS, json=body)
    assert answer.status_code == 422, answer.json
    assert answer.content_type == "application/problem+json"
    assert words in answer.json["errors"]["csr"][0]
    assert outbox(signer, "ca_signer.certificate.revoked") == []
    assert outbox(signer, "ca_signer.key.blocked") == []
    assert outbox(signer, "ca_signer.problem.reported") == []


def test_a_misuse_report_waits_for_the_operator_who_lists_it(signer):
    client = signer.create_app().test_client()
    answer = client.post(REPORTS, json={"kind": "misuse", "serial": "0A1B",
                                        "message": "this certificate serves a phishing site",
                                        "email": "abuse@example.net"},
                         headers={"X-Forwarded-For": "198.51.100.7"})
    assert answer.status_code == 201, answer.json
    assert (answer.json["status"], answer.json["revoked_serials"]) == ("open", [])
    assert "message" not in answer.json  # the reporter gets no echo of private fields

    operator = signer.tokens.headers(role="operator", account_id=None, user_id="op-1",
                                     name="Platform Operator")
    listed = client.get("/api/ca/v1/problem-reports", headers=operator)
    assert listed.status_code == 200, listed.json
    [report] = listed.json["items"]
    assert report["message"] == "this certificate serves a phishing site"
    assert report["created_at"].endswith("+00:00")  # RFC 3339, with its offset
    assert answer.json["created_at"] == report["created_at"]
    assert (report["serial"], report["reporter_email"]) == ("0a1b", "abuse@example.net")
    admin = signer.tokens.headers(role="admin", account_id="acct-" + "1" * 31,
                                  user_id="u-admin", name="Ada Admin")
    assert client.get("/api/ca/v1/problem-reports", headers=admin).status_code == 403
    assert client.post(REPORTS, json={"kind": "misuse"}).status_code == 422  # no message


def test_an_expired_or_already_revoked_certificate_is_not_revoked_again(signer):
    key = ec.generate_private_key(ec.SECP256R1())
    first = issue(signer, key)
    assert deliver(signer, revoke_command(first, "superseded"))
    second = issue(signer, key)
    answer = signer.create_app().test_client().post(
        REPORTS, json={"kind": "key_compromise", "csr": challenge_csr(key)})
    assert answer.json["revoked_serials"] == [second]


def test_every_report_is_mailed_to_the_operator_once(signer):
    from chancery_ca_signer import handlers
    from chancery_shared.mail import RecordingMailer
    from chancery_shared.messaging.envelope import utcnow

    client = signer.create_app().test_client()
    key = ec.generate_private_key(ec.SECP256R1())
    serial = issue(signer, key)
    client.post(REPORTS, json={"kind": "misuse", "message": "phishing at www.chancery.com",
                               "email": "abuse@example.net"})
    client.post(REPORTS, json={"kind": "key_compromise", "csr": challenge_csr(key)})
    failing, mailer = RecordingMailer(fail=True), RecordingMailer()
    operators = ("ca-ops@chancery.example",)

    assert handlers.notify_operator(signer.uow, failing, operators, utcnow()) == []
    mailed = handlers.notify_operator(signer.uow, mailer, operators, utcnow())
    assert len(mailed) == 2  # the failed pass left both pending
    assert handlers.notify_operator(signer.uow, mailer, operators, utcnow()) == []

    misuse, compromise = mailer.sent
    assert misuse.to == operators
    assert "within 24 hours" in misuse.subject and "phishing at www.chancery.com" in misuse.body
    assert "abuse@example.net" in misuse.body
    assert "1 certificate(s) revoked" in compromise.subject and serial in compromise.body


def test_without_smtp_or_operators_nothing_is_mailed(signer):
    assert signer.mailer is None
    assert signer.notify_operator() == []
