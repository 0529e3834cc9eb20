import datetime as dt

import pytest
from chancery_ca_signer.pki import lint
from chancery_ca_signer.pki.keys import KeyType
from chancery_ca_signer.pki.profiles import (
    PrivateProfile,
    build_tls_server_certificate,
    new_serial_number,
)
from cryptography.hazmat.primitives.serialization import Encoding


def _builder(hierarchy, csr_info, base_url, now, names=("www.example.com",)):
    return build_tls_server_certificate(
        issuer_cert=hierarchy.issuing_cert,
        subject_public_key=csr_info.public_key,
        level="dv",
        dns_names=list(names),
        serial=new_serial_number(),
        not_before=now,
        not_after=now + dt.timedelta(days=90),
        public_base_url=base_url,
    )


def test_validator_is_built_once_and_reused(hierarchy, ec_csr, base_url, now):
    der = lint.sign_with_throwaway_key(
        _builder(hierarchy, ec_csr, base_url, now), hierarchy.issuing_key
    ).public_bytes(Encoding.DER)
    lint.lint_subscriber_certificate(der, "dv")
    first = lint._linter("DV_FINAL_CERTIFICATE")
    lint.lint_subscriber_certificate(der, "dv")
    assert lint._linter("DV_FINAL_CERTIFICATE") is first
    assert first.validator is lint._linter("DV_FINAL_CERTIFICATE").validator


def test_throwaway_key_is_cached_and_matches_the_ca_signature_algorithm(hierarchy, rsa_hierarchy):
    assert lint.throwaway_key(KeyType.EC_P256) is lint.throwaway_key(KeyType.EC_P256)
    assert lint.throwaway_key(KeyType.RSA_4096) is lint.throwaway_key(KeyType.RSA_2048)
    assert lint.throwaway_key(KeyType.EC_P384) is not lint.throwaway_key(KeyType.EC_P256)
    for h in (hierarchy, rsa_hierarchy):
        # Same TBS whichever key signs: the probe and the CA-signed certificate match.
        builder = build_tls_server_certificate(
            issuer_cert=h.issuing_cert,
            subject_public_key=h.root_key.public_key(),
            level="dv",
            dns_names=["www.example.com"],
            serial=123456789,
            not_before=dt.datetime(2026, 6, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
            public_base_url="http://pki.example.com",
        )
        probe = lint.sign_with_throwaway_key(builder, h.issuing_key)
        real = h.issuing_key.sign_certificate(builder)
        assert probe.tbs_certificate_bytes == real.tbs_certificate_bytes
        assert probe.signature != real.signature


def test_findings_are_structured_and_blocking_only_for_error_and_fatal(
    hierarchy, ec_csr, base_url, now
):
    builder = _builder(
        hierarchy, ec_csr, base_url, now, names=("www.example.com", "intranet.local")
    )
    der = lint.sign_with_throwaway_key(builder, hierarchy.issuing_key).public_bytes(Encoding.DER)
    report = lint.lint_subscriber_certificate(der, "dv")
    assert not report.ok
    (finding,) = report.errors
    assert finding.severity == "ERROR" and finding.blocking
    assert finding.code == "cabf.internal_domain_name"
    assert "intranet.local" in finding.message
    assert finding.path.endswith("subjectAltName.1.dNSName")
    assert finding.as_dict()["code"] == "cabf.internal_domain_name"
    assert lint.LintFinding("WARNING", "x", None, "p", "v").blocking is False
    assert lint.LintFinding("FATAL", "x", None, "p", "v").blocking is True


def _private_der(h, csr_info, now, *, level="private", days=90, policy=None,
                 names=("intranet.local", "db1.corp.internal")):
    builder = build_tls_server_certificate(
        issuer_cert=h.issuing_cert,
        subject_public_key=csr_info.public_key,
        level=level,
        dns_names=list(names),
        ip_addresses=["10.0.0.5"] if level == "private" else [],
        serial=new_serial_number(),
        not_before=now,
        not_after=now + dt.timedelta(days=days) - dt.timedelta(seconds=1),
        public_base_url="http://pki.corp.internal",
        **({"private_policy_oid": policy} if policy else {}),
    )
    return lint.sign_with_throwaway_key(builder, h.issuing_key).public_bytes(Encoding.DER)


def test_private_profile_lints_with_rfc5280_and_the_private_rules(private_hierarchy, ec_csr,
                                                                  now):
    der = _private_der(private_hierarchy, ec_csr, now)
    report = lint.lint_subscriber_certificate(der, "private")
    assert report.profile == lint.PRIVATE_LINT
    assert report.ok and report.findings == ()  # internal names and URLs are fine here
    assert not lint.lint_subscriber_certificate(der, "dv").ok  # the BR lint refuses them


def test_private_rules_refuse_cabf_oids_a_foreign_policy_and_a_long_validity(
    private_hierarchy, ec_csr, now
):
    cabf = _private_der(private_hierarchy, ec_csr, now, level="dv", names=("www.example.com",))
    codes = {f.code for f in lint.lint_subscriber_certificate(cabf, "private").errors}
    assert codes == {"chancery.private.cabf_reserved_policy_oid",
                     "chancery.private.missing_private_policy_oid"}

    other = _private_der(private_hierarchy, ec_csr, now, policy="1.3.6.1.4.1.55555.1")
    assert [f.code for f in lint.lint_subscriber_certificate(other, "private").errors] == [
        "chancery.private.missing_private_policy_oid"]
    mine = PrivateProfile(policy_oid="1.3.6.1.4.1.55555.1")
    assert lint.lint_subscriber_certificate(other, "private", mine).ok

    long = _private_der(private_hierarchy, ec_csr, now, days=399)
    (finding,) = lint.lint_subscriber_certificate(long, "private").errors
    assert finding.code == "chancery.private.validity_period_exceeds_maximum"
    assert "399 days" in finding.message and "398" in finding.message
    assert lint.lint_subscriber_certificate(long, "private",
                                            PrivateProfile(max_validity_days=399)).ok
    assert lint.lint_subscriber_certificate(
        _private_der(private_hierarchy, ec_csr, now, days=398), "private").ok


def test_lint_then_sign_refuses_before_the_ca_key_signs(hierarchy, ec_csr, base_url, now):
    builder = _builder(hierarchy, ec_csr, base_url, now, names=("app.test",))
    with pytest.raises(lint.LintRejected) as excinfo:
        lint.lint_then_sign(
            builder, hierarchy.issuing_key, lambda der: lint.lint_subscriber_certificate(der, "dv")
        )
    assert excinfo.value.report.errors
    assert "cabf.internal_domain_name" in str(excinfo.value)
