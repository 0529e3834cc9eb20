import datetime as dt
import shutil
import subprocess

import pytest
from chancery_ca_signer.pki import lint
from chancery_ca_signer.pki.csr import parse_csr
from chancery_ca_signer.pki.hierarchy import issuer_id
from chancery_ca_signer.pki.issuance import IssuanceRejected, build_chain_pem, issue_tls_certificate
from chancery_ca_signer.pki.keys import CaKey, EncryptedPemKey, KeyType
from chancery_ca_signer.pki.profiles import (
    DEFAULT_PRIVATE_POLICY_OID,
    PrivateProfile,
    build_tls_server_certificate,
    hierarchy_of,
    new_serial_number,
)
from chancery_ca_signer.pki.validity import validity_period
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.UTC
ORG = {"O": "Example Inc", "L": "Springfield", "ST": "Illinois", "C": "US"}
EV_ORG = {
    **ORG,
    "serial_number": "1234567",
    "business_category": "Private Organization",
    "jurisdiction_country": "US",
    "jurisdiction_state_or_province": "Delaware",
}


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def _policies(cert):
    return [p.policy_identifier.dotted_string for p in _ext(cert, x509.CertificatePolicies).value]


@pytest.fixture
def issue(hierarchy, now, base_url, ec_csr):
    """issue_tls_certificate with the session hierarchy and sensible defaults."""

    def _issue(
        names=("www.example.com", "*.example.com"),
        level="dv",
        subject_fields=None,
        csr_info=None,
        at=None,
        not_after=None,
        url=None,
        h=None,
        **kwargs,
    ):
        h = h or hierarchy
        return issue_tls_certificate(
            h.issuing_cert,
            h.issuing_key,
            csr_info or ec_csr,
            list(names),
            level,
            subject_fields,
            at or now,
            not_after,
            url or base_url,
            **kwargs,
        )

    return _issue


# --- clean issuance -----------------------------------------------------------------------


def test_dv_ecdsa_p256_certificate_issues_with_no_pkilint_findings(issue, hierarchy, base_url):
    issued = issue()
    assert issued.lint_findings == ()
    cert = issued.certificate
    assert cert.issuer == hierarchy.issuing_cert.subject
    cert.verify_directly_issued_by(hierarchy.issuing_cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert lint.lint_subscriber_certificate(issued.der, "dv").findings == ()


def test_dv_rsa_2048_certificate_issues_with_no_pkilint_findings(issue, rsa_csr):
    issued = issue(csr_info=rsa_csr, names=["www.example.com"])
    assert issued.lint_findings == ()
    ku = _ext(issued.certificate, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment


def test_certificates_from_an_rsa_ca_issue_with_no_pkilint_findings(
    issue, rsa_hierarchy, rsa_csr, ec_csr
):
    for info in (rsa_csr, ec_csr):
        issued = issue(h=rsa_hierarchy, csr_info=info)
        assert issued.lint_findings == ()
        issued.certificate.verify_directly_issued_by(rsa_hierarchy.issuing_cert)


def test_dv_certificate_follows_the_sc62_profile(issue, hierarchy, base_url):
    issued = issue()
    cert = issued.certificate
    iid = issuer_id(hierarchy.issuing_cert)
    assert len(cert.subject) == 0  # DV: no organization fields, no CN by default
    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.critical  # empty subject => critical SAN (RFC 5280)
    assert san.value.get_values_for_type(x509.DNSName) == ["www.example.com", "*.example.com"]
    assert _policies(cert) == ["2.23.140.1.2.1"]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    issuer_ski = _ext(hierarchy.issuing_cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == issuer_ski
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectKeyIdentifier)  # BR: NOT RECOMMENDED for subscribers
    aia = {
        a.access_method: a.access_location.value
        for a in _ext(cert, x509.AuthorityInformationAccess).value
    }
    assert aia == {
        x509.AuthorityInformationAccessOID.OCSP: f"{base_url}/ca/ocsp",
        x509.AuthorityInformationAccessOID.CA_ISSUERS: f"{base_url}/ca/issuers/{iid}.crt",
    }
    crl = _ext(cert, x509.CRLDistributionPoints).value
    assert crl[0].full_name[0].value == f"{base_url}/ca/crl/{iid}.crl"


def test_dv_certificate_carries_no_organization_even_when_given(issue):
    cert = issue(subject_fields=ORG).certificate
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert len(cert.subject) == 0


def test_ov_certificate_carries_o_l_st_c_and_the_ov_policy(issue):
    issued = issue(level="ov", subject_fields=ORG)
    assert issued.lint_findings == ()
    subject = issued.certificate.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Inc"
    assert subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value == "Springfield"
    assert subject.get_attributes_for_oid(NameOID.STATE_OR_PROVINCE_NAME)[0].value == "Illinois"
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "US"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    assert _policies(issued.certificate) == ["2.23.140.1.2.2"]
    assert not _ext(issued.certificate, x509.SubjectAlternativeName).critical


def test_ev_certificate_carries_ev_attributes_and_policy(issue):
    issued = issue(level="ev", subject_fields=EV_ORG, names=["www.example.com"])
    assert issued.lint_findings == ()
    assert _policies(issued.certificate) == ["2.23.140.1.1"]
    subject = issued.certificate.subject
    assert (
        subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)[0].value == "Private Organization"
    )
    assert subject.get_attributes_for_oid(NameOID.JURISDICTION_COUNTRY_NAME)[0].value == "US"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "1234567"


def test_ev_wildcard_is_refused_by_lint(issue):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(level="ev", subject_fields=EV_ORG)
    assert "cabf.ev_guidelines.ev_wildcard_san_present" in {f.code for f in excinfo.value.findings}


def test_ov_without_organization_is_rejected_before_signing(issue):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(level="ov", subject_fields={"C": "US", "L": "Springfield"})
    assert excinfo.value.field == "subject_fields"


def test_unknown_subject_field_is_rejected(issue):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(level="ov", subject_fields={**ORG, "OU": "IT"})
    assert excinfo.value.field == "subject_fields"


def test_common_name_is_the_first_san_when_requested_and_pkilint_warns(issue):
    issued = issue(include_common_name=True)
    assert (
        issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "www.example.com"
    )
    assert [f.code for f in issued.lint_findings] == [
        "cabf.serverauth.dv.common_name_attribute_present"
    ]
    assert all(f.severity == "WARNING" for f in issued.lint_findings)


def test_rsa_key_encipherment_is_opt_in_and_only_warns(issue, rsa_csr):
    issued = issue(csr_info=rsa_csr, rsa_key_encipherment=True)
    assert _ext(issued.certificate, x509.KeyUsage).value.key_encipherment
    assert [(f.severity, f.code) for f in issued.lint_findings] == [
        ("WARNING", "cabf.serverauth.subscriber_rsa_digitalsignature_and_keyencipherment_present")
    ]


def test_private_certificate_uses_private_policy_and_private_lint(issue, private_hierarchy):
    issued = issue(
        level="private",
        names=["db1.corp.internal", "*.svc.corp.local"],
        ip_addresses=["10.0.0.5"],
        subject_fields=ORG,
        h=private_hierarchy,
        url="http://pki.corp.internal",
        issuer_hierarchy="private",
    )
    assert issued.lint_findings == ()
    assert _policies(issued.certificate) == [DEFAULT_PRIVATE_POLICY_OID]
    _ext(issued.certificate, x509.SubjectKeyIdentifier)  # RFC 5280 SHOULD for end entities
    assert lint.lint_subscriber_certificate(issued.der, "private").ok
    assert not lint.lint_subscriber_certificate(issued.der, "dv").ok  # not a BR certificate
    custom = issue(
        level="private",
        names=["db1.corp.internal"],
        h=private_hierarchy,
        private=PrivateProfile(policy_oid="1.3.6.1.4.1.55555.1.2.1"),
    )
    assert _policies(custom.certificate) == ["1.3.6.1.4.1.55555.1.2.1"]


def test_private_validity_is_capped_by_the_operator_setting(issue, private_hierarchy, now):
    default = issue(level="private", names=["db1.corp.internal"], h=private_hierarchy)
    assert validity_period(default.not_before, default.not_after) == dt.timedelta(days=398)
    short = issue(
        level="private",
        names=["db1.corp.internal"],
        h=private_hierarchy,
        private=PrivateProfile(max_validity_days=30),
        not_after=now + dt.timedelta(days=400),
    )
    assert validity_period(short.not_before, short.not_after) == dt.timedelta(days=30)


@pytest.mark.parametrize("level, tree", [("private", "public"), ("dv", "private"),
                                         ("ev", "private")])
def test_a_level_is_refused_by_an_issuer_of_the_other_hierarchy(issue, level, tree):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(level=level, subject_fields=EV_ORG, issuer_hierarchy=tree)
    assert excinfo.value.field == "issuer"
    assert f"signed only by a {hierarchy_of(level)} issuing CA" in excinfo.value.reason


def test_public_ip_san_is_allowed(issue):
    issued = issue(names=["www.example.com"], ip_addresses=["8.8.8.8"])
    assert issued.lint_findings == ()
    assert [
        str(ip)
        for ip in _ext(issued.certificate, x509.SubjectAlternativeName).value.get_values_for_type(
            x509.IPAddress
        )
    ] == ["8.8.8.8"]


# --- lint refuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"names": ["foo.local"]}, "cabf.internal_domain_name"),
        ({"names": ["www.example.com", "app.test"]}, "cabf.internal_domain_name"),
        ({"url": "http://pki.example"}, "cabf.internal_domain_name"),
        ({"url": "http://localhost:8080"}, "cabf.internal_domain_name"),
        ({"names": ["www.example.com"], "ip_addresses": ["10.0.0.1"]}, "cabf.internal_ip_address"),
    ],
)
def test_lint_error_refuses_issuance(issue, kwargs, code):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(**kwargs)
    exc = excinfo.value
    assert exc.field == "lint"
    assert code in {f.code for f in exc.findings}
    assert any(f.severity in ("ERROR", "FATAL") for f in exc.findings)
    assert all(f.path.startswith("certificate.") for f in exc.findings)
    assert code in exc.reason


def test_lint_refusal_signs_nothing_with_the_ca_key(hierarchy, ec_csr, now):
    class CountingKey(CaKey):
        calls = 0

        key_type = property(lambda self: hierarchy.issuing_key.key_type)

        def public_key(self):
            return hierarchy.issuing_key.public_key()

        def sign_certificate(self, builder):
            CountingKey.calls += 1
            return hierarchy.issuing_key.sign_certificate(builder)

        sign_crl = sign_ocsp_response = None

    with pytest.raises(IssuanceRejected):
        issue_tls_certificate(
            hierarchy.issuing_cert,
            CountingKey(),
            ec_csr,
            ["foo.local"],
            "dv",
            None,
            now,
            None,
            "http://pki.example.com",
        )
    assert CountingKey.calls == 0
    issue_tls_certificate(
        hierarchy.issuing_cert,
        CountingKey(),
        ec_csr,
        ["www.example.com"],
        "dv",
        None,
        now,
        None,
        "http://pki.example.com",
    )
    assert CountingKey.calls == 1


# --- other refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "names", [[], ["WWW.example.com"], ["www.example.com."], ["bücher.example"]]
)
def test_missing_or_unnormalised_names_are_rejected(issue, names):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(names=names)
    assert excinfo.value.field == "names"


def test_https_public_base_url_is_rejected(issue):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(url="https://pki.example.com")
    assert excinfo.value.field == "public_base_url"


def test_ca_key_not_matching_the_issuer_is_rejected(
    hierarchy, rsa_hierarchy, ec_csr, now, base_url
):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue_tls_certificate(
            hierarchy.issuing_cert,
            rsa_hierarchy.issuing_key,
            ec_csr,
            ["www.example.com"],
            "dv",
            None,
            now,
            None,
            base_url,
        )
    assert excinfo.value.field == "issuer"


def test_subscriber_key_equal_to_the_ca_key_is_rejected(hierarchy, make_csr, now, base_url):
    # A CsrInfo carrying the CA's public key (no CSR can be made without its private key).
    info = parse_csr(make_csr(ec.generate_private_key(ec.SECP256R1())))
    from dataclasses import replace

    stolen = replace(info, public_key=hierarchy.issuing_key.public_key())
    with pytest.raises(IssuanceRejected, match="CA's own key"):
        issue_tls_certificate(
            hierarchy.issuing_cert,
            hierarchy.issuing_key,
            stolen,
            ["www.example.com"],
            "dv",
            None,
            now,
            None,
            base_url,
        )


def test_issuance_outside_the_issuer_validity_is_rejected(issue, hierarchy):
    with pytest.raises(IssuanceRejected) as excinfo:
        issue(at=hierarchy.issuing_cert.not_valid_before_utc - dt.timedelta(days=1))
    assert excinfo.value.field == "issuer"


def test_signature_by_a_wrong_key_is_caught_after_signing(
    hierarchy, ec_csr, now, base_url, passphrase
):
    impostor = EncryptedPemKey.generate(KeyType.EC_P256, passphrase)

    class LyingKey(CaKey):
        """Claims the issuing CA's public key but signs with another key (a faulty HSM)."""

        key_type = property(lambda self: KeyType.EC_P256)

        def public_key(self):
            return hierarchy.issuing_key.public_key()

        def sign_certificate(self, builder):
            return impostor.sign_certificate(builder)

        sign_crl = sign_ocsp_response = None

    with pytest.raises(IssuanceRejected, match="does not verify"):
        issue_tls_certificate(
            hierarchy.issuing_cert,
            LyingKey(),
            ec_csr,
            ["www.example.com"],
            "dv",
            None,
            now,
            None,
            base_url,
        )


def test_signature_with_another_hash_than_linted_is_caught(hierarchy, ec_csr, now, base_url):
    class WrongHashKey(CaKey):
        key_type = property(lambda self: KeyType.EC_P256)

        def public_key(self):
            return hierarchy.issuing_key.public_key()

        def sign_certificate(self, builder):
            return builder.sign(hierarchy.issuing_key._private_key, hashes.SHA384())

        sign_crl = sign_ocsp_response = None

    with pytest.raises(IssuanceRejected, match="differs from the linted"):
        issue_tls_certificate(
            hierarchy.issuing_cert,
            WrongHashKey(),
            ec_csr,
            ["www.example.com"],
            "dv",
            None,
            now,
            None,
            base_url,
        )


# --- validity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "at, days",
    [
        (dt.datetime(2025, 6, 1, 12, tzinfo=UTC), 397),
        (dt.datetime(2026, 3, 15, tzinfo=UTC), 199),
        (dt.datetime(2027, 3, 15, tzinfo=UTC), 99),
        (dt.datetime(2029, 3, 15, tzinfo=UTC), 46),
    ],
)
def test_issued_validity_is_capped_by_date_and_pkilint_stays_silent(issue, old_hierarchy, at, days):
    issued = issue(h=old_hierarchy, at=at, not_after=at + dt.timedelta(days=3650))
    assert issued.not_before == at
    assert issued.not_after - issued.not_before + dt.timedelta(seconds=1) == dt.timedelta(days=days)
    assert issued.lint_findings == ()


def test_requested_shorter_validity_is_kept(issue, now):
    issued = issue(not_after=now + dt.timedelta(days=30))
    assert issued.not_after == now + dt.timedelta(days=30)


def test_validity_is_cut_to_the_issuer_expiry(issue, old_hierarchy):
    at = old_hierarchy.issuing_cert.not_valid_after_utc - dt.timedelta(days=10)
    issued = issue(h=old_hierarchy, at=at)
    assert issued.not_after == old_hierarchy.issuing_cert.not_valid_after_utc


@pytest.mark.parametrize(
    "extra, expected",
    [
        (dt.timedelta(0), set()),
        (
            dt.timedelta(seconds=1),
            {("WARNING", "cabf.serverauth.certificate_validity_period_exceeds_199_days")},
        ),
        (
            dt.timedelta(days=1),
            {("WARNING", "cabf.serverauth.certificate_validity_period_exceeds_199_days")},
        ),
        (
            dt.timedelta(days=1, seconds=1),
            {("ERROR", "cabf.serverauth.certificate_validity_period_exceeds_200_days")},
        ),
    ],
)
def test_pkilint_counts_validity_inclusively_like_the_cap(
    hierarchy, ec_csr, now, base_url, extra, expected
):
    nb = now
    na = nb + dt.timedelta(days=199) - dt.timedelta(seconds=1) + extra
    builder = build_tls_server_certificate(
        issuer_cert=hierarchy.issuing_cert,
        subject_public_key=ec_csr.public_key,
        level="dv",
        dns_names=["www.example.com"],
        serial=new_serial_number(),
        not_before=nb,
        not_after=na,
        public_base_url=base_url,
    )
    probe = lint.sign_with_throwaway_key(builder, hierarchy.issuing_key)
    from cryptography.hazmat.primitives.serialization import Encoding

    report = lint.lint_subscriber_certificate(probe.public_bytes(Encoding.DER), "dv")
    assert {(f.severity, f.code) for f in report.findings} == expected


# --- serials ------------------------------------------------------------------------------


def test_serials_are_positive_below_2_159_and_distinct():
    serials = [new_serial_number() for _ in range(1000)]
    assert all(0 < s < 2**159 for s in serials)
    assert len(set(serials)) == 1000
    assert max(s.bit_length() for s in serials) > 150  # actually random over ~159 bits


def test_issued_certificate_carries_the_serial(issue):
    issued = issue(serial=0x1234567890ABCDEF1234)
    assert issued.certificate.serial_number == issued.serial == 0x1234567890ABCDEF1234
    assert issued.serial_hex == "1234567890abcdef1234"


# --- chain --------------------------------------------------------------------------------


def test_chain_pem_is_leaf_then_issuing_then_optional_root(issue, hierarchy):
    issued = issue()
    chain = x509.load_pem_x509_certificates(
        build_chain_pem(issued.certificate, hierarchy.issuing_cert).encode()
    )
    assert chain == [issued.certificate, hierarchy.issuing_cert]
    full = x509.load_pem_x509_certificates(
        build_chain_pem(issued, hierarchy.issuing_cert, hierarchy.root_cert).encode()
    )
    assert full == [issued.certificate, hierarchy.issuing_cert, hierarchy.root_cert]


def _openssl_verify(tmp_path, root, issuing, leaf_pem):
    (tmp_path / "root.pem").write_text(_pem(root))
    (tmp_path / "issuing.pem").write_text(_pem(issuing))
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "issuing.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _pem(cert):
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("fixture", ["hierarchy", "rsa_hierarchy"])
def test_chain_verifies_with_openssl(issue, fixture, request, tmp_path):
    h = request.getfixturevalue(fixture)
    issued = issue(h=h)
    result = _openssl_verify(tmp_path, h.root_cert, h.issuing_cert, issued.pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "leaf.pem: OK" in result.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_chain_does_not_verify_against_another_root(issue, hierarchy, rsa_hierarchy, tmp_path):
    issued = issue()
    result = _openssl_verify(tmp_path, rsa_hierarchy.root_cert, hierarchy.issuing_cert, issued.pem)
    assert result.returncode != 0
