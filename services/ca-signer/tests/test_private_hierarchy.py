"""Private certificates come from their own hierarchy and never chain to the public root.

Driven through the real consumer and the ``ca_signer.certificate.sign`` handler on a
migrated SQLite database. The chains are built and verified with cryptography's X.509
path validation and with ``openssl verify``: a private certificate verifies against the
private root and fails against the public root, with every CA certificate on hand.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chancery_ca_signer import authorities
from chancery_ca_signer.model import IssuedCertificate, Issuer, ProfileIssuer, messaging
from chancery_ca_signer.pki import hierarchy as ca_certificates
from chancery_ca_signer.pki import lint
from chancery_ca_signer.pki.keys import EncryptedPemKey, KeyType
from chancery_ca_signer.service import CaSignerService, CaSignerSettings
from chancery_ca_signer.testing import assert_lints_clean, evidence_for
from chancery_shared import config as cfg
from chancery_shared import migrations
from chancery_shared.messaging.envelope import Actor, Context, new_envelope, utcnow
from chancery_shared.testing import make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from sqlalchemy import select, text

MY_OID = "1.3.6.1.4.1.55555.1.2.1"
ENV = {"CHANCERY_PUBLIC_BASE_URL": "http://pki.chancery.com",
       "CHANCERY_PRIVATE_BASE_URL": "http://pki.corp.internal",
       "CHANCERY_PRIVATE_POLICY_OID": MY_OID}


def service_in(folder: Path, **env: str) -> CaSignerService:
    service = CaSignerService(make_runtime(folder, **{**ENV, **env}))
    service.migrate()
    return service


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """The development seed: both hierarchies."""
    service = service_in(tmp_path_factory.mktemp("seeded"))
    service.bootstrap_dev()
    yield service
    service.dispose()


def cas(service: CaSignerService) -> dict[tuple[str, str], Issuer]:
    """(hierarchy, kind) -> the active CA."""
    with service.uow() as uow:
        rows = list(uow.session.execute(select(Issuer).where(Issuer.active.is_(True))).scalars())
        uow.session.expunge_all()
    return {(row.hierarchy, row.kind): row for row in rows}


def cert(issuer: Issuer) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issuer.certificate_pem.encode())


def outbox(service: CaSignerService, type: str) -> list[dict]:
    with service.engine.connect() as connection:
        rows = connection.execute(select(messaging.outbox.c.body).where(
            messaging.outbox.c.type == type).order_by(messaging.outbox.c.seq)).scalars()
        return [json.loads(row) for row in rows]


def order(service: CaSignerService, profile: str, names: list[str]) -> dict:
    """Deliver a sign command; the answer (issued or rejected event) for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    order_id = str(uuid.uuid4())
    subject = {"common_name": names[0]}
    if profile in ("ov", "ev"):
        subject |= {"organization_name": "Example Corp", "locality": "Austin",
                    "state_or_province": "Texas", "country": "US"}
    if profile == "ev":
        subject |= {"serial_number": "1234567", "business_category": "Private Organization",
                    "jurisdiction_country": "US"}
    envelope = new_envelope(
        type="ca_signer.certificate.sign", source="orders",
        context=Context(actor=Actor.service("orders"), account_id="acct-1",
                        correlation_id=order_id),
        subject_type="order", subject_id=order_id, summary="test",
        data={"order_id": order_id, "issuance_id": str(uuid.uuid4()), "csr_pem": csr,
              "profile": profile, "subject": subject, "sans": names, "not_after": None,
              "validations": evidence_for(names, profile)})
    (consumer,) = service.consumers()
    assert consumer.handle(envelope, consumer.handlers[envelope.type])
    [answer] = [e for e in outbox(service, "ca_signer.certificate.issued")
                + outbox(service, "ca_signer.certificate.rejected")
                if e["data"]["order_id"] == order_id]
    return answer


def issued(service: CaSignerService, profile: str, names: list[str]) -> x509.Certificate:
    answer = order(service, profile, names)
    assert answer["type"] == "ca_signer.certificate.issued", answer["data"]
    assert_lints_clean(answer["data"]["certificate_pem"], profile, service.private)
    return x509.load_pem_x509_certificate(answer["data"]["certificate_pem"].encode())


def verify(leaf: x509.Certificate, root: x509.Certificate,
           intermediates: list[x509.Certificate]) -> None:
    """Path validation (cryptography): raises VerificationError when no path exists."""
    name = leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)[0]
    verifier = (PolicyBuilder().store(Store([root])).time(datetime.now(UTC))
                .build_server_verifier(x509.DNSName(name)))
    verifier.verify(leaf, intermediates)


def openssl_verify(folder: Path, leaf: x509.Certificate, root: x509.Certificate,
                   intermediates: list[x509.Certificate]) -> subprocess.CompletedProcess:
    def pem(*certs: x509.Certificate) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    (folder / "root.pem").write_bytes(pem(root))
    (folder / "untrusted.pem").write_bytes(pem(*intermediates))
    (folder / "leaf.pem").write_bytes(pem(leaf))
    return subprocess.run(["openssl", "verify", "-CAfile", str(folder / "root.pem"),
                           "-untrusted", str(folder / "untrusted.pem"),
                           str(folder / "leaf.pem")], capture_output=True, text=True)


# --- (a) a private certificate chains to the private root only ---------------------------


def test_the_seed_makes_both_hierarchies_each_signing_its_own_profiles(seeded):
    found = cas(seeded)
    assert set(found) == {("public", "root"), ("public", "issuing"),
                          ("private", "root"), ("private", "issuing")}
    assert found[("private", "issuing")].parent_id == found[("private", "root")].id
    assert found[("public", "issuing")].parent_id == found[("public", "root")].id
    with seeded.uow() as uow:
        assert authorities.profile_assignments(uow) == {
            "dv": found[("public", "issuing")].id, "ov": found[("public", "issuing")].id,
            "ev": found[("public", "issuing")].id, "private": found[("private", "issuing")].id}
    created = {e["data"]["issuer_id"]: e["data"]["hierarchy"]
               for e in outbox(seeded, "ca_signer.issuer.created")}
    assert created == {ca.id: ca.hierarchy for ca in found.values()}
    # the private issuing CA points at the private hierarchy's URLs
    private_ca = cert(found[("private", "issuing")])
    assert "http://pki.corp.internal/ca/crl/" in str(
        private_ca.extensions.get_extension_for_class(x509.CRLDistributionPoints).value)
    assert lint.lint_private_ca_certificate(
        private_ca.public_bytes(serialization.Encoding.DER)).ok


def test_a_private_certificate_never_chains_to_the_public_root(seeded, tmp_path):
    found = cas(seeded)
    public_root, private_root = cert(found[("public", "root")]), cert(found[("private", "root")])
    every_ca = [cert(found[("public", "issuing")]), cert(found[("private", "issuing")])]

    leaf = issued(seeded, "private", ["db1.corp.internal", "*.svc.corp.internal"])

    assert leaf.issuer == cert(found[("private", "issuing")]).subject
    with pytest.raises(VerificationError):
        verify(leaf, public_root, every_ca)  # every CA on hand, still no path
    failed = openssl_verify(tmp_path, leaf, public_root, every_ca)
    assert failed.returncode != 0, failed.stdout
    verify(leaf, private_root, every_ca)
    assert openssl_verify(tmp_path, leaf, private_root, every_ca).returncode == 0
    # it says what it is: the operator's policy, no CA/B Forum OID, private URLs
    policies = [p.policy_identifier.dotted_string for p in
                leaf.extensions.get_extension_for_class(x509.CertificatePolicies).value]
    assert policies == [MY_OID]
    aia = str(leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value)
    assert "http://pki.corp.internal/ca/" in aia and "pki.chancery.com" not in aia
    with seeded.uow() as uow:
        record = uow.session.execute(select(IssuedCertificate).where(
            IssuedCertificate.serial == format(leaf.serial_number, "x"))).scalar_one()
        assert record.issuer_id == found[("private", "issuing")].id


@pytest.mark.parametrize("profile", ["dv", "ov", "ev"])
def test_a_public_certificate_never_chains_to_the_private_root(seeded, tmp_path, profile):
    found = cas(seeded)
    every_ca = [cert(found[("public", "issuing")]), cert(found[("private", "issuing")])]

    leaf = issued(seeded, profile, [f"{profile}.chancery.com"])

    with pytest.raises(VerificationError):
        verify(leaf, cert(found[("private", "root")]), every_ca)
    verify(leaf, cert(found[("public", "root")]), every_ca)
    assert openssl_verify(tmp_path, leaf, cert(found[("public", "root")]),
                          every_ca).returncode == 0


def test_private_validity_follows_the_operator_cap(tmp_path):
    service = service_in(tmp_path, CHANCERY_PRIVATE_MAX_VALIDITY_DAYS="30")
    try:
        service.bootstrap_dev()
        leaf = issued(service, "private", ["short.corp.internal"])
        period = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        assert period.days == 29 and period.seconds == 86399  # 30 days, counted inclusively
    finally:
        service.dispose()


# --- (c) no private CA: a rejection, never a public signature -----------------------------


def one_hierarchy(service: CaSignerService, tree: str, profiles: tuple[str, ...] = ()) -> str:
    """Register a root of ``tree`` and an issuing CA under it; the issuing CA's id."""
    now = utcnow()
    root_key = EncryptedPemKey.generate(KeyType.EC_P384, service.keys.passphrase)
    root_cert = ca_certificates.create_root_ca(root_key, common_name=f"Only {tree} Root",
                                               organization="Test", country="US", now=now)
    with service.uow() as uow:
        root = authorities.register_root(uow, root_cert, root_key, now, hierarchy=tree)
        issuing = authorities.create_issuing_ca(
            uow, service.keys, root.id, root_key, key_type=KeyType.EC_P256, now=now,
            public_base_url=service.settings.public_base_url, profiles=profiles,
            private=service.private)
        uow.commit()
        return issuing.id


@pytest.mark.parametrize(("tree", "profile", "missing"), [
    ("public", "private", "no private issuing CA is configured for the private profile"),
    ("private", "dv", "no public issuing CA is configured for the dv profile"),
])
def test_a_profile_without_a_ca_of_its_hierarchy_is_rejected_not_signed(tmp_path, tree,
                                                                        profile, missing):
    service = service_in(tmp_path)
    try:
        one_hierarchy(service, tree)  # unassigned: the only issuing CA, of the other hierarchy

        answer = order(service, profile, ["refused.chancery.com"])

        assert answer["type"] == "ca_signer.certificate.rejected"
        assert missing in answer["data"]["reason"]
        with service.uow() as uow:
            assert uow.session.execute(select(IssuedCertificate)).first() is None
    finally:
        service.dispose()


def test_a_cross_assignment_left_in_the_table_is_refused_at_signing(tmp_path):
    service = service_in(tmp_path)
    try:
        public_ca = one_hierarchy(service, "public", ("dv",))
        with service.uow() as uow:  # as if written behind chancery-ca's back
            uow.session.add(ProfileIssuer(profile="private", issuer_id=public_ca))
            uow.commit()

        answer = order(service, "private", ["refused.corp.internal"])

        assert answer["type"] == "ca_signer.certificate.rejected"
        assert (f"it is assigned to public issuing CA {public_ca}, which never signs it"
                in answer["data"]["reason"])
    finally:
        service.dispose()


def test_the_seed_adds_a_private_hierarchy_to_a_database_that_has_only_a_public_one(
        tmp_path):
    service = service_in(tmp_path)
    try:
        public_ca = one_hierarchy(service, "public", ("dv", "ov", "ev"))

        service.bootstrap_dev()

        found = cas(service)
        assert found[("public", "issuing")].id == public_ca  # left alone
        assert ("private", "issuing") in found
        assert issued(service, "private", ["app.corp.internal"]).issuer \
            == cert(found[("private", "issuing")]).subject
    finally:
        service.dispose()


# --- (e) the private policy OID and validity settings -----------------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("CHANCERY_PRIVATE_POLICY_OID", "2.23.140.1.2.1"),  # the CA/B Forum's DV OID
    ("CHANCERY_PRIVATE_POLICY_OID", "2.23.140"),
    ("CHANCERY_PRIVATE_POLICY_OID", "2.5.29.32.0"),  # anyPolicy
    ("CHANCERY_PRIVATE_POLICY_OID", "1.3.6.1.4.1.x"),
    ("CHANCERY_PRIVATE_POLICY_OID", "1.40.1"),
    ("CHANCERY_PRIVATE_POLICY_OID", "private"),
    ("CHANCERY_PRIVATE_MAX_VALIDITY_DAYS", "0"),
    ("CHANCERY_PRIVATE_MAX_VALIDITY_DAYS", "826"),
    ("CHANCERY_PRIVATE_BASE_URL", "https://pki.corp.internal"),
])
def test_a_bad_private_setting_stops_the_service_at_start_up(tmp_path, variable, value):
    with pytest.raises(cfg.ConfigError) as excinfo:
        CaSignerService(make_runtime(tmp_path, **{variable: value}))
    assert variable in excinfo.value.problems


def test_the_private_settings_default_to_a_documentation_arc_and_398_days():
    settings = cfg.load(CaSignerSettings, {})
    assert settings.private_profile().policy_oid == "1.3.6.1.4.1.32473.1.2.1"
    assert settings.private_profile().max_validity_days == 398
    assert settings.private_profile().url_base("http://pki.chancery.com") \
        == "http://pki.chancery.com"


# --- the migration's backfill ------------------------------------------------------------

BEFORE = "013daf792a87"  # the revision before issuers had a hierarchy


def _insert_ca(connection, issuer_id: str, kind: str, parent_id: str | None) -> None:
    connection.execute(text(
        "INSERT INTO issuers (id, kind, parent_id, subject, certificate_pem, key_type,"
        " key_backend, not_before, not_after, active, crl_stale, created_at) VALUES"
        " (:id, :kind, :parent, 'CN=x', 'pem', 'ec-p256', 'software', '2026-01-01',"
        " '2031-01-01', 1, 0, '2026-01-01')"),
        {"id": issuer_id, "kind": kind, "parent": parent_id})


def test_the_migration_derives_each_hierarchy_from_its_roots_profiles(tmp_path):
    service = CaSignerService(make_runtime(tmp_path))
    try:
        migrations.upgrade(service.migrations_dir, service.engine, BEFORE)
        with service.engine.begin() as connection:
            for root, issuing in (("r-shared", "i-shared"), ("r-private", "i-private"),
                                  ("r-idle", "i-idle")):
                _insert_ca(connection, root, "root", None)
                _insert_ca(connection, issuing, "issuing", root)
            _insert_ca(connection, "i-shared-2", "issuing", "r-shared")
            for profile, issuer in (("dv", "i-shared"), ("ov", "i-shared"),
                                    ("private", "i-private"), ("ev", "i-shared-2")):
                connection.execute(text("INSERT INTO profile_issuers (profile, issuer_id,"
                                        " assigned_at) VALUES (:p, :i, '2026-01-01')"),
                                   {"p": profile, "i": issuer})

        service.migrate()

        with service.engine.connect() as connection:
            trees = dict(connection.execute(text("SELECT id, hierarchy FROM issuers")).all())
            assignments = dict(connection.execute(text(
                "SELECT profile, issuer_id FROM profile_issuers")).all())
        assert trees == {"r-shared": "public", "i-shared": "public", "i-shared-2": "public",
                         "r-private": "private", "i-private": "private",
                         "r-idle": "public", "i-idle": "public"}
        assert assignments == {"dv": "i-shared", "ov": "i-shared", "ev": "i-shared-2",
                               "private": "i-private"}
    finally:
        service.dispose()


def test_the_migration_drops_a_private_assignment_on_a_public_ca(tmp_path):
    service = CaSignerService(make_runtime(tmp_path))
    try:
        migrations.upgrade(service.migrations_dir, service.engine, BEFORE)
        with service.engine.begin() as connection:
            _insert_ca(connection, "r-old", "root", None)
            _insert_ca(connection, "i-old", "issuing", "r-old")
            for profile in ("dv", "private"):  # the old "one CA signs everything"
                connection.execute(text("INSERT INTO profile_issuers (profile, issuer_id,"
                                        " assigned_at) VALUES (:p, 'i-old', '2026-01-01')"),
                                   {"p": profile})

        service.migrate()

        with service.engine.connect() as connection:
            trees = dict(connection.execute(text("SELECT id, hierarchy FROM issuers")).all())
            assignments = dict(connection.execute(text(
                "SELECT profile, issuer_id FROM profile_issuers")).all())
        assert trees == {"r-old": "public", "i-old": "public"}
        assert assignments == {"dv": "i-old"}  # private is refused until assigned anew
    finally:
        service.dispose()
