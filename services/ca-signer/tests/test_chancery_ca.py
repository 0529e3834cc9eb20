"""`chancery-ca`: a key ceremony and the CA operations after it, on a real database.

The commands run in-process (their `main`) against a migrated SQLite database, as an
operator would run them against the service's database; certificates they produce are
checked with openssl.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from chancery_ca_signer import cli
from chancery_ca_signer.model import Crl, Issuer, messaging
from chancery_ca_signer.service import CaSignerService
from chancery_ca_signer.testing import assert_lints_clean, evidence_for
from chancery_shared.messaging.envelope import Actor, Context, new_envelope
from chancery_shared.testing import make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

ROOT_PASSPHRASE = "root ceremony passphrase, 32 bytes!"


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ceremony")
    environ = {"CHANCERY_VAR_DIR": str(folder), "CHANCERY_BROKER_URL": "memory://",
               "CHANCERY_PUBLIC_BASE_URL": "http://pki.chancery.com",
               "CHANCERY_CA_KEY_PASSPHRASE": "service passphrase of 32 bytes..",
               "CHANCERY_ROOT_KEY_PASSPHRASE": ROOT_PASSPHRASE}
    service = CaSignerService(make_runtime(folder, **environ))
    service.migrate()
    saved = dict(os.environ)
    os.environ.update(environ)
    try:
        yield service, folder
    finally:
        os.environ.clear()
        os.environ.update(saved)
        service.dispose()


def run(*argv: str) -> int:
    return cli.main(list(argv))


def issuers(service) -> dict[str, Issuer]:
    with service.uow() as uow:
        rows = list(uow.session.execute(select(Issuer)).scalars())
        for row in rows:
            uow.session.expunge(row)
        return {row.id: row for row in rows}


def events(service, type: str) -> list[dict]:
    with service.engine.connect() as connection:
        rows = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == type).order_by(messaging.outbox.c.seq)).scalars()
        return [json.loads(row) for row in rows]


def sign(service, profile: str, name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    order_id = str(uuid.uuid4())
    subject = {"common_name": name}
    if profile in ("ov", "ev"):
        subject |= {"organization_name": "Example Corp", "locality": "Austin",
                    "state_or_province": "Texas", "country": "US"}
    envelope = new_envelope(
        type="ca_signer.certificate.sign", source="orders",
        context=Context(actor=Actor.service("orders"), account_id="acct-1",
                        correlation_id=order_id),
        subject_type="order", subject_id=order_id, summary="test",
        data={"order_id": order_id, "issuance_id": str(uuid.uuid4()), "csr_pem": csr,
              "profile": profile, "subject": subject, "sans": [name], "not_after": None,
              "validations": evidence_for([name], profile)})
    (consumer,) = service.consumers()
    assert consumer.handle(envelope, consumer.handlers[envelope.type])
    rejected = [e["data"]["reason"] for e in events(service, "ca_signer.certificate.rejected")
                if e["data"]["order_id"] == order_id]
    assert not rejected, rejected
    [answer] = [e for e in events(service, "ca_signer.certificate.issued")
                if e["data"]["order_id"] == order_id]
    assert_lints_clean(answer["data"]["certificate_pem"], profile, service.private)
    return x509.load_pem_x509_certificate(answer["data"]["certificate_pem"].encode())


def openssl_verify(folder: Path, chain_pem: str, leaf: x509.Certificate) -> None:
    root, *intermediates = reversed(x509.load_pem_x509_certificates(chain_pem.encode()))
    (folder / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (folder / "untrusted.pem").write_bytes(b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in intermediates))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "root.pem"),
                             "-untrusted", str(folder / "untrusted.pem"),
                             str(folder / "leaf.pem")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_ceremony_then_issuance_rotation_and_revocation(ceremony, capsys):
    service, folder = ceremony
    key_file, cert_file = folder / "root-key.pem", folder / "root.pem"

    # 1. the root: key written encrypted, owner-only; only the certificate is registered
    assert run("create-root", "--hierarchy", "public",
               "--common-name", "Chancery Test Root R1", "--organization",
               "Chancery Test", "--country", "US", "--key-out", str(key_file),
               "--cert-out", str(cert_file)) == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    [root] = issuers(service).values()
    assert (root.kind, root.key_backend, root.encrypted_key_pem, root.hierarchy) == \
        ("root", "offline", None, "public")
    with service.uow() as uow:
        [root_crl] = uow.session.execute(select(Crl).where(Crl.issuer_id == root.id)).scalars()
        assert root_crl.entries == 0 and root_crl.next_update > root_crl.this_update

    # 2. two issuing CAs, each naming its profiles
    assert run("create-issuing", "--root", root.id, "--root-key", str(key_file),
               "--key-type", "rsa-2048", "--profiles", "ov,ev") == 0
    assert run("create-issuing", "--root", root.id, "--root-key", str(key_file),
               "--key-type", "ec-p256", "--profiles", "dv") == 0
    by_type = {i.key_type: i for i in issuers(service).values() if i.kind == "issuing"}
    rsa_ca, ec_ca = by_type["rsa-2048"], by_type["ec-p256"]
    assert rsa_ca.encrypted_key_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")

    # 3. each profile is signed by its CA, and openssl verifies the exported chains
    ov = sign(service, "ov", "ov.chancery.com")
    dv = sign(service, "dv", "dv.chancery.com")
    assert ov.issuer == x509.load_pem_x509_certificate(rsa_ca.certificate_pem.encode()).subject
    assert dv.issuer == x509.load_pem_x509_certificate(ec_ca.certificate_pem.encode()).subject
    for issuer_id, leaf in ((rsa_ca.id, ov), (ec_ca.id, dv)):
        capsys.readouterr()
        assert run("export-chain", issuer_id) == 0
        openssl_verify(folder, capsys.readouterr().out, leaf)

    # 4. rotation: a new key; the profiles move; the old CA signs nothing new
    assert run("rotate-issuing", ec_ca.id, "--root-key", str(key_file)) == 0
    after = issuers(service)
    [new_ec] = [i for i in after.values() if i.key_type == "ec-p256" and i.id != ec_ca.id]
    assert not after[ec_ca.id].active and new_ec.active
    assert sign(service, "dv", "next.chancery.com").issuer == dv.issuer  # same name...
    rotated = sign(service, "dv", "rotated.chancery.com")
    rotated.verify_directly_issued_by(
        x509.load_pem_x509_certificate(new_ec.certificate_pem.encode()))  # ...new key
    assert [e["data"]["replaced_by"] for e in events(service, "ca_signer.issuer.retired")] \
        == [new_ec.id]

    # 5. revoking the retired CA: the root CRL, signed on the spot, lists it
    assert run("revoke-issuing", ec_ca.id, "--reason", "cessation_of_operation",
               "--root-key", str(key_file)) == 0
    crl_der = service.create_app().test_client().get(f"/ca/crl/{root.id}.crl").data
    (folder / "root.crl").write_bytes(crl_der)
    result = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(folder / "root.crl"),
                             "-CAfile", str(cert_file), "-noout", "-text"],
                            capture_output=True, text=True)
    assert "verify OK" in result.stderr + result.stdout, result.stderr
    old_serial = x509.load_pem_x509_certificate(ec_ca.certificate_pem.encode()).serial_number
    assert format(old_serial, "X") in result.stdout.replace(":", "").upper()
    assert "Cessation Of Operation" in result.stdout

    # 6. list shows it all
    capsys.readouterr()
    assert run("list") == 0
    listing = capsys.readouterr().out
    assert f"{ec_ca.id}  public   issuing  revoked" in listing
    assert "ov,ev" in listing or "ev,ov" in listing


def test_a_wrong_root_passphrase_is_refused_without_echoing_it(ceremony, capsys, tmp_path):
    service, folder = ceremony
    key_file = tmp_path / "root-key.pem"
    assert run("create-root", "--hierarchy", "public",
               "--common-name", "Chancery Test Root R2", "--organization",
               "Chancery Test", "--country", "US", "--key-out", str(key_file),
               "--cert-out", str(tmp_path / "root.pem")) == 0
    root_id = next(i.id for i in issuers(service).values()
                   if "R2" in i.subject)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the root passphrase at all")
    capsys.readouterr()

    status = run("sign-root-crl", root_id, "--root-key", str(key_file),
                 "--root-passphrase-file", str(wrong))

    err = capsys.readouterr().err
    assert status == 1
    assert "wrong passphrase" in err and "not the root passphrase" not in err


def test_create_root_never_overwrites_a_key(ceremony, capsys, tmp_path):
    key_file = tmp_path / "root-key.pem"
    key_file.write_text("precious")

    status = run("create-root", "--hierarchy", "public", "--common-name", "X",
                 "--organization", "X", "--country", "US", "--key-out", str(key_file),
                 "--cert-out", str(tmp_path / "r.pem"))

    assert status == 2 and key_file.read_text() == "precious"
    assert "refusing to overwrite" in capsys.readouterr().err


def test_a_root_names_its_hierarchy(ceremony, capsys, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        run("create-root", "--common-name", "X", "--organization", "X", "--country", "US",
            "--key-out", str(tmp_path / "k.pem"), "--cert-out", str(tmp_path / "r.pem"))
    assert excinfo.value.code == 2
    assert "--hierarchy" in capsys.readouterr().err
    assert not (tmp_path / "k.pem").exists()


def test_an_unknown_profile_is_refused_by_name(ceremony, capsys):
    service, _ = ceremony
    issuing = next(i for i in issuers(service).values() if i.kind == "issuing" and i.active)

    assert run("assign-profile", "dv", "0123456789abcdef") == 1
    assert "no issuing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("assign-profile", "code-signing", issuing.id)


def test_the_command_is_installed():
    result = subprocess.run([str(Path(sys.executable).parent / "chancery-ca"), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "create-root" in result.stdout


def test_profiles_of_a_revoked_ca_are_refused_until_assigned_again(ceremony, tmp_path):
    service, folder = ceremony
    key_file = tmp_path / "root-key.pem"
    assert run("create-root", "--hierarchy", "private",
               "--common-name", "Chancery Test Root R3", "--organization",
               "Chancery Test", "--country", "US", "--key-out", str(key_file),
               "--cert-out", str(tmp_path / "root.pem")) == 0
    root_id = next(i.id for i in issuers(service).values() if "R3" in i.subject)
    assert run("create-issuing", "--root", root_id, "--root-key", str(key_file),
               "--key-type", "ec-p256", "--common-name", "R3 Private CA",
               "--profiles", "private") == 0
    assert run("create-issuing", "--root", root_id, "--root-key", str(key_file),
               "--key-type", "ec-p384", "--common-name", "R3 Spare CA") == 0
    private_ca = next(i for i in issuers(service).values() if "R3 Private CA" in i.subject)
    spare = next(i for i in issuers(service).values() if "R3 Spare CA" in i.subject)

    assert run("revoke-issuing", private_ca.id, "--reason", "key_compromise",
               "--root-key", str(key_file)) == 0
    with pytest.raises(AssertionError, match="no issuing CA is configured for this profile: "
                                             "private is assigned to issuing CA"):
        sign(service, "private", "refused.chancery.com")

    assert run("assign-profile", "private", spare.id) == 0
    assert sign(service, "private", "private2.chancery.com").issuer.rfc4514_string() \
        == spare.subject


def test_a_private_root_and_its_ca_sign_private_only_and_cross_assignment_is_refused(
        ceremony, tmp_path, capsys):
    service, _ = ceremony
    public_key, private_key = tmp_path / "public-root-key.pem", tmp_path / "private-root-key.pem"
    assert run("create-root", "--hierarchy", "public",
               "--common-name", "Chancery Test Root P1",
               "--organization", "Chancery Test", "--country", "US", "--key-out",
               str(public_key), "--cert-out", str(tmp_path / "public-root.pem")) == 0
    assert run("create-root", "--hierarchy", "private", "--common-name",
               "Chancery Test Private Root Q1", "--organization", "Chancery Test", "--country",
               "US", "--key-out", str(private_key),
               "--cert-out", str(tmp_path / "private-root.pem")) == 0
    public_root = next(i for i in issuers(service).values() if "Root P1" in i.subject)
    private_root = next(i for i in issuers(service).values() if "Root Q1" in i.subject)
    assert (public_root.hierarchy, private_root.hierarchy) == ("public", "private")

    # an issuing CA is of its root's hierarchy, and takes only that hierarchy's profiles
    capsys.readouterr()
    assert run("create-issuing", "--root", public_root.id, "--root-key", str(public_key),
               "--profiles", "dv,private") == 1
    assert "mixes public and private profiles" in capsys.readouterr().err
    assert run("create-issuing", "--root", public_root.id, "--root-key", str(public_key),
               "--profiles", "private") == 1
    assert "a public issuing CA signs only dv, ov, ev, not private" in capsys.readouterr().err
    assert run("create-issuing", "--root", private_root.id, "--root-key", str(private_key),
               "--profiles", "ev") == 1
    assert "a private issuing CA signs only private, not ev" in capsys.readouterr().err
    assert run("create-issuing", "--root", private_root.id, "--root-key", str(private_key),
               "--policy-oid", "2.23.140.1.2.1") == 1
    assert "CA/B Forum policy OID" in capsys.readouterr().err
    assert run("create-issuing", "--root", public_root.id, "--root-key", str(public_key),
               "--common-name", "P1 Public CA", "--profiles", "dv,ov") == 0
    assert run("create-issuing", "--root", private_root.id, "--root-key", str(private_key),
               "--common-name", "Q1 Private CA", "--profiles", "private") == 0
    assert "private issuing CA" in capsys.readouterr().out
    public_ca = next(i for i in issuers(service).values() if "P1 Public CA" in i.subject)
    private_ca = next(i for i in issuers(service).values() if "Q1 Private CA" in i.subject)
    assert (public_ca.hierarchy, private_ca.hierarchy) == ("public", "private")
    created = {e["data"]["issuer_id"]: e["data"]["hierarchy"]
               for e in events(service, "ca_signer.issuer.created")}
    assert created[private_ca.id] == created[private_root.id] == "private"
    assert created[public_ca.id] == "public"

    # assignment across hierarchies is refused both ways, and changes nothing
    assert run("assign-profile", "dv", private_ca.id) == 1
    assert ("is of the private hierarchy; the dv profile is signed only by a public issuing "
            "CA") in capsys.readouterr().err
    assert run("assign-profile", "private", public_ca.id) == 1
    assert ("is of the public hierarchy; the private profile is signed only by a private "
            "issuing CA") in capsys.readouterr().err
    with service.uow() as uow:
        from chancery_ca_signer import authorities

        assignments = authorities.profile_assignments(uow)
    assert assignments["dv"] == public_ca.id and assignments["private"] == private_ca.id

    # the private certificate chains to the private root, and openssl refuses the public one
    leaf = sign(service, "private", "db.corp.internal")
    assert leaf.issuer.rfc4514_string() == private_ca.subject
    capsys.readouterr()
    assert run("export-chain", private_ca.id) == 0
    private_chain = capsys.readouterr().out
    openssl_verify(tmp_path, private_chain, leaf)
    assert run("export-chain", public_ca.id) == 0
    public_chain = capsys.readouterr().out
    with pytest.raises(AssertionError):
        openssl_verify(tmp_path, public_chain, leaf)

    # rotation keeps the hierarchy
    assert run("rotate-issuing", private_ca.id, "--root-key", str(private_key)) == 0
    rotated = next(i for i in issuers(service).values()
                   if "Q1 Private CA" in i.subject and i.active)
    assert rotated.id != private_ca.id and rotated.hierarchy == "private"


# --- an issuing CA whose key is in an HSM (SoftHSM2) ------------------------------------

HSM_PIN, HSM_SO_PIN = "hsm-user-pin-4821", "hsm-so-pin-9932"


@pytest.fixture
def hsm(tmp_path, monkeypatch):
    from chancery_ca_signer.testing import softhsm_module, softhsm_tokens

    if softhsm_module() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("SoftHSM2 is missing (make system-packages installs it)")
        pytest.skip("SoftHSM2 is not installed")
    with softhsm_tokens(tmp_path / "hsm", ["chancery-ca"], HSM_PIN, HSM_SO_PIN) as module:
        pin_file = tmp_path / "pin"
        pin_file.write_text(HSM_PIN)
        monkeypatch.setenv("CHANCERY_PKCS11_MODULE", module)
        monkeypatch.setenv("CHANCERY_PKCS11_PIN_FILE", str(pin_file))
        yield module


def test_an_hsm_issuing_ca_signs_certificates_crls_and_its_ocsp_responder(ceremony, hsm,
                                                                           tmp_path, capsys):
    from chancery_ca_signer import handlers
    from chancery_shared.messaging.envelope import utcnow
    from cryptography.x509 import ocsp

    _, folder = ceremony
    service = CaSignerService(make_runtime(folder, **{k: v for k, v in os.environ.items()
                                                      if k.startswith("CHANCERY_")}))
    try:
        key_file = tmp_path / "root-key.pem"
        assert run("create-root", "--hierarchy", "public",
               "--common-name", "Chancery HSM Root", "--organization",
                   "Chancery Test", "--country", "US", "--key-out", str(key_file),
                   "--cert-out", str(tmp_path / "root.pem")) == 0
        root_id = next(i.id for i in issuers(service).values() if "HSM Root" in i.subject)
        assert run("create-issuing", "--root", root_id, "--root-key", str(key_file),
                   "--key-type", "rsa-2048", "--backend", "pkcs11", "--pkcs11-label",
                   "issuing-rsa", "--common-name", "Chancery HSM RSA CA",
                   "--profiles", "dv") == 0
        hsm_ca = next(i for i in issuers(service).values() if "HSM RSA CA" in i.subject)
        assert hsm_ca.key_backend == "pkcs11" and hsm_ca.encrypted_key_pem is None
        assert hsm_ca.key_reference.startswith("pkcs11:") and "object=issuing-rsa" in \
            hsm_ca.key_reference

        leaf = sign(service, "dv", "hsm.chancery.com")
        capsys.readouterr()
        assert run("export-chain", hsm_ca.id) == 0
        openssl_verify(tmp_path, capsys.readouterr().out, leaf)

        ca_cert = x509.load_pem_x509_certificate(hsm_ca.certificate_pem.encode())
        with service.uow() as uow:
            crl = handlers.current_crl(uow, service.keys, hsm_ca.id, utcnow())
            assert x509.load_der_x509_crl(crl.der).is_signature_valid(ca_cert.public_key())
        request = (ocsp.OCSPRequestBuilder().add_certificate(leaf, ca_cert, hashes.SHA1())
                   .build().public_bytes(serialization.Encoding.DER))
        with service.uow() as uow:
            answer = ocsp.load_der_ocsp_response(
                handlers.ocsp_answer(uow, service.keys, request, utcnow()).der)
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        [responder] = answer.certificates
        responder.verify_directly_issued_by(ca_cert)  # the HSM key signed the responder
    finally:
        service.dispose()
