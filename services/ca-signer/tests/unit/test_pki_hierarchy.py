import pytest
from chancery_ca_signer.pki.hierarchy import (
    ANY_POLICY_OID,
    create_issuing_ca,
    create_root_ca,
    issuer_id,
)
from chancery_ca_signer.pki.keys import EncryptedPemKey, KeyType
from chancery_ca_signer.pki.lint import (
    LintRejected,
    lint_ca_certificate,
    lint_private_ca_certificate,
)
from chancery_ca_signer.pki.urls import ca_urls, normalise_base_url
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def _der(cert):
    return cert.public_bytes(Encoding.DER)


@pytest.mark.parametrize("fixture", ["hierarchy", "rsa_hierarchy"])
def test_root_and_issuing_ca_have_no_pkilint_findings(fixture, request):
    h = request.getfixturevalue(fixture)
    root_report = lint_ca_certificate(_der(h.root_cert))
    issuing_report = lint_ca_certificate(_der(h.issuing_cert))
    assert root_report.profile == "ROOT_CA"
    assert issuing_report.profile == "INTERNAL_UNCONSTRAINED_TLS_CA"
    assert root_report.findings == ()
    assert issuing_report.findings == ()


def test_default_hierarchy_is_ecdsa_p384_root_and_p256_issuing(hierarchy):
    assert hierarchy.root_key.key_type is KeyType.EC_P384
    assert hierarchy.issuing_key.key_type is KeyType.EC_P256
    # the root signs with SHA-384 (P-384), per BR 7.1.3.2
    assert hierarchy.issuing_cert.signature_hash_algorithm.name == "sha384"


def test_root_profile(hierarchy):
    root = hierarchy.root_cert
    assert root.subject == root.issuer
    bc = _ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = _ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = _ext(root, x509.SubjectKeyIdentifier).value
    assert _ext(root, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    for absent in (x509.ExtendedKeyUsage, x509.CertificatePolicies):
        with pytest.raises(x509.ExtensionNotFound):
            _ext(root, absent)
    root.verify_directly_issued_by(root)


def test_issuing_ca_profile(hierarchy, base_url):
    root, ca = hierarchy.root_cert, hierarchy.issuing_cert
    ca.verify_directly_issued_by(root)
    bc = _ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(ca, x509.KeyUsage)
    assert (
        ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    )
    assert list(_ext(ca, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert [
        p.policy_identifier.dotted_string for p in _ext(ca, x509.CertificatePolicies).value
    ] == [ANY_POLICY_OID]
    root_ski = _ext(root, x509.SubjectKeyIdentifier).value.digest
    assert _ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    root_id = issuer_id(root)
    aia = _ext(ca, x509.AuthorityInformationAccess).value
    assert [a.access_location.value for a in aia] == [f"{base_url}/ca/issuers/{root_id}.crt"]
    crl = _ext(ca, x509.CRLDistributionPoints).value
    assert crl[0].full_name[0].value == f"{base_url}/ca/crl/{root_id}.crl"
    assert [a.oid for a in ca.subject] == [
        NameOID.COUNTRY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.COMMON_NAME,
    ]
    assert ca.not_valid_after_utc <= root.not_valid_after_utc


def test_issuer_id_is_first_8_bytes_of_ski_in_hex_and_stable_per_key(hierarchy, now, base_url):
    ca = hierarchy.issuing_cert
    iid = issuer_id(ca)
    assert iid == _ext(ca, x509.SubjectKeyIdentifier).value.digest[:8].hex()
    assert len(iid) == 16
    # Re-issuing the CA certificate for the same key keeps its id (URLs stay valid).
    reissued = create_issuing_ca(
        hierarchy.root_cert,
        hierarchy.root_key,
        hierarchy.issuing_key,
        common_name="Chancery Test TLS ECC Issuing CA",
        organization="Chancery Test",
        country="US",
        public_base_url=base_url,
        now=now,
    )
    assert reissued.serial_number != ca.serial_number
    assert issuer_id(reissued) == iid
    assert issuer_id(hierarchy.root_cert) != iid


def test_issuing_ca_with_one_reserved_policy_oid_lints_clean(hierarchy, now, base_url, passphrase):
    key = EncryptedPemKey.generate(KeyType.EC_P256, passphrase)
    ca = create_issuing_ca(
        hierarchy.root_cert,
        hierarchy.root_key,
        key,
        common_name="Chancery Test DV CA",
        organization="Chancery Test",
        country="US",
        public_base_url=base_url,
        now=now,
        policy_oids=["2.23.140.1.2.1"],
    )
    assert lint_ca_certificate(_der(ca)).findings == ()


def test_issuing_ca_with_two_reserved_policy_oids_is_refused_by_lint(
    hierarchy, now, base_url, passphrase
):
    key = EncryptedPemKey.generate(KeyType.EC_P256, passphrase)
    with pytest.raises(LintRejected) as excinfo:
        create_issuing_ca(
            hierarchy.root_cert,
            hierarchy.root_key,
            key,
            common_name="Chancery Test CA",
            organization="Chancery Test",
            country="US",
            public_base_url=base_url,
            now=now,
            policy_oids=["2.23.140.1.2.1", "2.23.140.1.2.2"],
        )
    assert "cabf.serverauth.ca_multiple_reserved_policy_oids" in {
        f.code for f in excinfo.value.findings
    }


def test_issuing_ca_with_reserved_url_host_is_refused_by_lint(hierarchy, now, passphrase):
    key = EncryptedPemKey.generate(KeyType.EC_P256, passphrase)
    with pytest.raises(LintRejected) as excinfo:
        create_issuing_ca(
            hierarchy.root_cert,
            hierarchy.root_key,
            key,
            common_name="Chancery Test CA",
            organization="Chancery Test",
            country="US",
            public_base_url="http://pki.test",
            now=now,
        )
    assert {f.code for f in excinfo.value.report.errors} == {"cabf.internal_domain_name"}


def test_a_private_issuing_ca_may_name_internal_hosts_but_no_cabf_policy(
    private_hierarchy, now, passphrase
):
    ca = private_hierarchy.issuing_cert
    assert "pki.corp.internal" in str(_ext(ca, x509.CRLDistributionPoints).value)
    assert lint_private_ca_certificate(_der(ca)).ok
    ca.verify_directly_issued_by(private_hierarchy.root_cert)
    key = EncryptedPemKey.generate(KeyType.EC_P256, passphrase)
    with pytest.raises(LintRejected) as excinfo:
        create_issuing_ca(
            private_hierarchy.root_cert,
            private_hierarchy.root_key,
            key,
            common_name="Chancery Test Private CA",
            organization="Chancery Test Private",
            country="US",
            public_base_url="http://pki.corp.internal",
            now=now,
            policy_oids=["2.23.140.1.2.1"],
            hierarchy="private",
        )
    assert {f.code for f in excinfo.value.report.errors} == {
        "chancery.private.cabf_reserved_policy_oid"
    }


def test_issuing_ca_refuses_a_root_key_that_does_not_match(hierarchy, rsa_hierarchy, now, base_url):
    with pytest.raises(ValueError, match="does not belong"):
        create_issuing_ca(
            hierarchy.root_cert,
            rsa_hierarchy.root_key,
            hierarchy.issuing_key,
            common_name="X",
            organization="Chancery Test",
            country="US",
            public_base_url=base_url,
            now=now,
        )


def test_root_validity_outside_br_range_is_refused(hierarchy, now):
    with pytest.raises(ValueError):
        create_root_ca(
            hierarchy.root_key,
            common_name="R",
            organization="O",
            country="US",
            now=now,
            validity_days=10000,
        )


def test_ca_urls_follow_the_public_routes(base_url):
    urls = ca_urls(base_url + "/", "0011223344556677")
    assert urls.ca_issuers == "http://pki.example.com/ca/issuers/0011223344556677.crt"
    assert urls.crl == "http://pki.example.com/ca/crl/0011223344556677.crl"
    assert urls.ocsp == "http://pki.example.com/ca/ocsp"


@pytest.mark.parametrize(
    "bad",
    ["https://pki.example.com", "pki.example.com", "http://", "http://pki.example.com/?x=1", ""],
)
def test_public_base_url_must_be_plain_http_with_a_host(bad):
    with pytest.raises(ValueError):
        normalise_base_url(bad)
