"""Root and issuing (subordinate) CA certificates, BR 7.1.2.1 and 7.1.2.6/7.1.2.10 profiles.

Root (self-signed, BR 7.1.2.1): subject C, O, CN; basicConstraints CA:TRUE critical
without pathLen; keyUsage keyCertSign + cRLSign + digitalSignature critical; SKI, and
AKI equal to the SKI; no EKU, no certificatePolicies (BR: MUST NOT / NOT RECOMMENDED);
validity 8 to 25 years (default 20).

Issuing CA (BR 7.1.2.6 "TLS subordinate CA", pkilint type INTERNAL_UNCONSTRAINED_TLS_CA
because the root and it are operated by the same operator): subject C, O, CN;
basicConstraints CA:TRUE pathLen 0 critical; keyUsage as the root; SKI; AKI (key id of
the root); EKU serverAuth only; certificatePolicies; AIA caIssuers -> the root's
certificate URL; CRL DP -> the root's CRL URL.

certificatePolicies of the issuing CA: by default ``anyPolicy``, which BR 7.1.2.10.5
allows for a CA affiliated with the root's operator and which lets one issuing CA issue
DV, OV and EV certificates (or, in the private hierarchy, private ones). The alternative is one
reserved CA/B Forum OID (e.g. ``("2.23.140.1.2.1",)`` for a DV-only CA): pkilint
refuses more than one reserved OID in a CA certificate (ca_multiple_reserved_policy_oids),
so a CA cannot list DV *and* OV. Pass ``policy_oids`` to choose.

Private hierarchy (``hierarchy=Hierarchy.PRIVATE``): a separate root of the same shape,
whose issuing CAs sign only ``private`` certificates. Such an issuing CA is linted with
the RFC 5280 validators (its URLs may name internal hosts) and may not carry a CA/B
Forum reserved policy OID; give it ``anyPolicy`` or the operator's own policy OID.

ECDSA by default (root P-384 signing with SHA-384, issuing P-256 signing with SHA-256);
RSA works the same way. CA certificates are linted before the CA key signs them, with the
same throwaway-key technique as subscriber certificates (see :mod:`.lint`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .keys import CaKey, EncryptedPemKey, KeyType
from .lint import lint_certificate, lint_private_ca_certificate, lint_then_sign
from .profiles import Hierarchy, new_serial_number
from .urls import CaUrls, ca_urls, issuer_id, normalise_base_url
from .validity import truncate_to_seconds

__all__ = [
    "ANY_POLICY_OID",
    "DEFAULT_ROOT_VALIDITY_DAYS",
    "DEFAULT_ISSUING_VALIDITY_DAYS",
    "ca_subject",
    "create_root_ca",
    "create_issuing_ca",
    "create_hierarchy",
    "CaHierarchy",
    "issuer_id",
    "ca_urls",
    "CaUrls",
]

ANY_POLICY_OID = "2.5.29.32.0"
DEFAULT_ROOT_VALIDITY_DAYS = 7305  # 20 years; BR: 2922..9132 days
DEFAULT_ISSUING_VALIDITY_DAYS = 1826  # 5 years
_ONE_SECOND = _dt.timedelta(seconds=1)


def ca_subject(common_name: str, organization: str, country: str) -> x509.Name:
    """A CA subject DN in BR 7.1.4.2 order: C, O, CN (all three required by BR 7.1.2.10.2)."""
    if not (common_name and organization and country):
        raise ValueError("a CA subject needs a common name, an organization and a country")
    if len(country) != 2 or not country.isalpha() or not country.isupper():
        raise ValueError("country must be an ISO 3166-1 alpha-2 code in upper case")
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, country)]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
        ]
    )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,  # lets the CA sign OCSP responses itself; pkilint notices its absence
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _lint_as(profile: str):
    return lambda der: lint_certificate(der, profile)


def create_root_ca(
    root_key: CaKey,
    *,
    common_name: str,
    organization: str,
    country: str,
    now: _dt.datetime,
    validity_days: int = DEFAULT_ROOT_VALIDITY_DAYS,
    serial: int | None = None,
) -> x509.Certificate:
    """Create and self-sign a root CA certificate (linted as ROOT_CA before signing)."""
    if not 2922 <= validity_days <= 9132:
        raise ValueError("root validity must be between 2922 and 9132 days (BR 7.1.2.1.1)")
    not_before = truncate_to_seconds(now)
    subject = ca_subject(common_name, organization, country)
    ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial if serial is not None else new_serial_number())
        .issuer_name(subject)
        .subject_name(subject)
        .public_key(root_key.public_key())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _dt.timedelta(days=validity_days) - _ONE_SECOND)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return lint_then_sign(builder, root_key, _lint_as("ROOT_CA")).certificate


def create_issuing_ca(
    root_cert: x509.Certificate,
    root_key: CaKey,
    issuing_public_key: CaKey | object,
    *,
    common_name: str,
    organization: str,
    country: str,
    public_base_url: str,
    now: _dt.datetime,
    validity_days: int = DEFAULT_ISSUING_VALIDITY_DAYS,
    policy_oids: Sequence[str] | None = None,
    serial: int | None = None,
    hierarchy: Hierarchy | str = Hierarchy.PUBLIC,
) -> x509.Certificate:
    """Create an issuing CA certificate signed by the root (linted as a TLS subordinate CA,
    or for a private ``hierarchy`` with the private CA lint).

    ``issuing_public_key`` is the new CA's :class:`CaKey` or its public key. Validity is
    cut to end no later than the root's. ``policy_oids`` defaults to ``(anyPolicy,)``.
    """
    if not root_key.matches(root_cert):
        raise ValueError("root_key does not belong to root_cert")
    public_key = (
        issuing_public_key.public_key()
        if isinstance(issuing_public_key, CaKey)
        else issuing_public_key
    )
    KeyType.from_public_key(public_key)  # refuses keys a CA may not have
    not_before = truncate_to_seconds(now)
    not_after = min(
        not_before + _dt.timedelta(days=validity_days) - _ONE_SECOND,
        root_cert.not_valid_after_utc,
    )
    if not_after <= not_before:
        raise ValueError("the root expires before the issuing CA would become valid")
    policies = list(policy_oids) if policy_oids is not None else [ANY_POLICY_OID]
    if not policies:
        raise ValueError("an issuing CA needs at least one certificate policy")
    urls = ca_urls(normalise_base_url(public_base_url), root_cert)
    root_ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    builder = (
        x509.CertificateBuilder()
        .serial_number(serial if serial is not None else new_serial_number())
        .issuer_name(root_cert.subject)
        .subject_name(ca_subject(common_name, organization, country))
        .public_key(public_key)  # type: ignore[arg-type]
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(ObjectIdentifier(oid), None) for oid in policies]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(urls.ca_issuers),
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(urls.crl)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
    )
    lint = (
        lint_private_ca_certificate
        if Hierarchy(hierarchy) is Hierarchy.PRIVATE
        else _lint_as("INTERNAL_UNCONSTRAINED_TLS_CA")
    )
    return lint_then_sign(builder, root_key, lint).certificate


@dataclass(frozen=True)
class CaHierarchy:
    """A root and one issuing CA with their keys (keys held encrypted at rest)."""

    root_cert: x509.Certificate
    root_key: EncryptedPemKey
    issuing_cert: x509.Certificate
    issuing_key: EncryptedPemKey

    @property
    def root_id(self) -> str:
        return issuer_id(self.root_cert)

    @property
    def issuing_id(self) -> str:
        return issuer_id(self.issuing_cert)


def create_hierarchy(
    *,
    passphrase: str | bytes,
    public_base_url: str,
    organization: str,
    country: str,
    now: _dt.datetime,
    root_common_name: str | None = None,
    issuing_common_name: str | None = None,
    root_key_type: KeyType = KeyType.EC_P384,
    issuing_key_type: KeyType = KeyType.EC_P256,
    issuing_policy_oids: Sequence[str] | None = None,
    hierarchy: Hierarchy | str = Hierarchy.PUBLIC,
) -> CaHierarchy:
    """Generate keys and certificates for a root and an issuing CA (dev seed, key ceremony)."""
    algo = "ECC" if KeyType(issuing_key_type).is_ec else "RSA"
    root_key = EncryptedPemKey.generate(root_key_type, passphrase)
    issuing_key = EncryptedPemKey.generate(issuing_key_type, passphrase)
    root_cert = create_root_ca(
        root_key,
        common_name=root_common_name or f"{organization} Root CA",
        organization=organization,
        country=country,
        now=now,
    )
    issuing_cert = create_issuing_ca(
        root_cert,
        root_key,
        issuing_key,
        common_name=issuing_common_name or f"{organization} TLS {algo} Issuing CA",
        organization=organization,
        country=country,
        public_base_url=public_base_url,
        now=now,
        policy_oids=issuing_policy_oids,
        hierarchy=hierarchy,
    )
    return CaHierarchy(root_cert, root_key, issuing_cert, issuing_key)
