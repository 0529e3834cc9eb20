"""The subscriber TLS server certificate profile (BR 7.1.2.7, the SC-62 profile).

Extensions, in the order they are encoded:

* basicConstraints CA:FALSE, critical (BR: MAY; kept for old clients).
* keyUsage, critical: digitalSignature. ``keyEncipherment`` is added for RSA keys
  only on request (``rsa_key_encipherment=True``): BR 7.1.2.7.11 allows it, but pkilint
  warns when an RSA certificate asserts both bits, and it only serves the deprecated
  static-RSA TLS 1.2 key exchange. compliance.md lists it as "plus keyEncipherment
  for RSA"; we default to the pkilint-clean choice and keep the switch.
* extendedKeyUsage serverAuth only.
* subjectAltName with every name (critical when the subject is empty, RFC 5280).
* authorityKeyIdentifier (keyIdentifier only).
* subjectKeyIdentifier: omitted for BR levels (BR: NOT RECOMMENDED, pkilint warns);
  included for ``private`` (RFC 5280 SHOULD for end entities).
* authorityInformationAccess: OCSP + caIssuers.
* certificatePolicies: the CA/B Forum reserved OID of the level, alone and first
  (no qualifiers: BR NOT RECOMMENDED). ``private`` uses a private policy OID instead.
* cRLDistributionPoints: the issuing CA's CRL.

Subject (BR 7.1.2.7.2-4): DV carries nothing by default; OV carries C, ST, L, O; EV
adds the EVG attributes. commonName is "NOT RECOMMENDED" by the BR (pkilint warns), so
it is omitted unless ``include_common_name=True``, in which case it is the first SAN.

The ``private`` level is for a *private* hierarchy only: the BR do not apply to it, and
a publicly-trusted issuing CA must never issue it. :data:`PROFILE_HIERARCHY` is the one
place that says which hierarchy signs each level; :class:`PrivateProfile` holds the
operator's choices for private certificates (policy OID, validity cap, URL base).
"""

from __future__ import annotations

import datetime as _dt
import enum
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from .urls import ca_urls

__all__ = [
    "ValidationLevel",
    "POLICY_OID_DV",
    "POLICY_OID_OV",
    "POLICY_OID_IV",
    "POLICY_OID_EV",
    "DEFAULT_PRIVATE_POLICY_OID",
    "DEFAULT_PRIVATE_MAX_VALIDITY_DAYS",
    "CABF_POLICY_ARC",
    "Hierarchy",
    "PROFILE_HIERARCHY",
    "hierarchy_of",
    "profiles_of",
    "PrivateProfile",
    "parse_private_policy_oid",
    "parse_private_max_validity_days",
    "SubjectFields",
    "new_serial_number",
    "policy_oid_for",
    "build_subject",
    "build_tls_server_certificate",
]

POLICY_OID_DV = "2.23.140.1.2.1"
POLICY_OID_OV = "2.23.140.1.2.2"
POLICY_OID_IV = "2.23.140.1.2.3"
POLICY_OID_EV = "2.23.140.1.1"

#: The CA/B Forum's arc: its reserved policy OIDs (2.23.140.1.*) say "publicly trusted
#: under the BR", so no private certificate or private CA may carry one.
CABF_POLICY_ARC = "2.23.140"

#: Placeholder policy OID for ``private`` certificates, under PEN 32473, which RFC 5612
#: reserves for documentation and examples, so it can never collide with a real
#: organisation's arc and is plainly not a public policy. Operators set an OID under
#: their own IANA Private Enterprise Number (e.g. 1.3.6.1.4.1.<PEN>.1.2.1) with
#: ``CHANCERY_PRIVATE_POLICY_OID``. (A 2.25.<UUID> OID would need no registration, but
#: its 128-bit arc is beyond what pkilint's and some clients' decoders accept.)
DEFAULT_PRIVATE_POLICY_OID = "1.3.6.1.4.1.32473.1.2.1"
#: The longest private certificate issued by default (days, counted inclusively): the
#: longest a public one ever had, which most TLS clients also accept from private roots.
DEFAULT_PRIVATE_MAX_VALIDITY_DAYS = 398
#: The configurable cap cannot exceed this (the issuing CA's own end cuts it anyway).
MAX_PRIVATE_VALIDITY_DAYS = 825


class ValidationLevel(enum.StrEnum):
    """How the subscriber was validated; selects policy OID, subject and lint profile."""

    DV = "dv"
    OV = "ov"
    EV = "ev"
    PRIVATE = "private"

    def __str__(self) -> str:
        return self.value


class Hierarchy(enum.StrEnum):
    """Which root a CA chains to: the publicly trusted one, or the operator's private one."""

    PUBLIC = "public"
    PRIVATE = "private"

    def __str__(self) -> str:
        return self.value


#: The hierarchy whose issuing CAs sign each level: the one place profiles are classified.
#: A level is signed only by an issuing CA of its hierarchy, never by the other's.
PROFILE_HIERARCHY: Mapping[ValidationLevel, Hierarchy] = {
    ValidationLevel.DV: Hierarchy.PUBLIC,
    ValidationLevel.OV: Hierarchy.PUBLIC,
    ValidationLevel.EV: Hierarchy.PUBLIC,
    ValidationLevel.PRIVATE: Hierarchy.PRIVATE,
}


def hierarchy_of(level: ValidationLevel | str) -> Hierarchy:
    """The hierarchy that signs ``level`` (``ValueError`` for an unknown level)."""
    return PROFILE_HIERARCHY[ValidationLevel(level)]


def profiles_of(hierarchy: Hierarchy | str) -> tuple[str, ...]:
    """The levels (profile names) the issuing CAs of ``hierarchy`` sign."""
    wanted = Hierarchy(hierarchy)
    return tuple(level.value for level, h in PROFILE_HIERARCHY.items() if h is wanted)


_DOTTED_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def parse_private_policy_oid(raw: str) -> str:
    """``CHANCERY_PRIVATE_POLICY_OID``: a dotted OID of the operator's own arc.

    Refuses what is not a dotted OID, the CA/B Forum arc (2.23.140: those OIDs assert
    BR compliance) and anyPolicy (which asserts no policy at all)."""
    value = raw.strip()
    if not _DOTTED_OID.match(value):
        raise ValueError(f"{raw!r} is not a dotted OID such as 1.3.6.1.4.1.<PEN>.1.2.1")
    arcs = [int(arc) for arc in value.split(".")]
    if arcs[0] < 2 and arcs[1] > 39:
        raise ValueError(f"{raw!r} is not a valid OID (second arc above 39)")
    if value == CABF_POLICY_ARC or value.startswith(CABF_POLICY_ARC + "."):
        raise ValueError(f"{raw!r} is under the CA/B Forum arc {CABF_POLICY_ARC}, which is "
                         "for publicly trusted certificates; use your own arc")
    if value == "2.5.29.32.0":
        raise ValueError("anyPolicy is not a certificate policy of its own; use your own arc")
    return value


def parse_private_max_validity_days(raw: str) -> int:
    """``CHANCERY_PRIVATE_MAX_VALIDITY_DAYS``: 1 to 825 days."""
    days = int(raw)
    if not 1 <= days <= MAX_PRIVATE_VALIDITY_DAYS:
        raise ValueError(f"must be between 1 and {MAX_PRIVATE_VALIDITY_DAYS} days")
    return days


@dataclass(frozen=True)
class PrivateProfile:
    """The operator's choices for ``private`` certificates (ca-signer settings).

    ``policy_oid``: the policy OID private certificates carry. ``max_validity_days``:
    the longest validity issued, counted inclusively, and what the private lint allows.
    ``base_url``: base of the CRL, OCSP and caIssuers URLs in private certificates and
    private issuing CAs (may be an internal host); ``None`` uses the public base URL.
    """

    policy_oid: str = DEFAULT_PRIVATE_POLICY_OID
    max_validity_days: int = DEFAULT_PRIVATE_MAX_VALIDITY_DAYS
    base_url: str | None = None

    def __post_init__(self) -> None:
        parse_private_policy_oid(self.policy_oid)
        parse_private_max_validity_days(str(self.max_validity_days))

    def url_base(self, public_base_url: str) -> str:
        """The base URL certificates of the private hierarchy carry."""
        return self.base_url or public_base_url


def policy_oid_for(
    level: ValidationLevel | str, private_policy_oid: str = DEFAULT_PRIVATE_POLICY_OID
) -> str:
    """The certificate policy OID a certificate of ``level`` carries."""
    level = ValidationLevel(level)
    return {
        ValidationLevel.DV: POLICY_OID_DV,
        ValidationLevel.OV: POLICY_OID_OV,
        ValidationLevel.EV: POLICY_OID_EV,
        ValidationLevel.PRIVATE: private_policy_oid,
    }[level]


def new_serial_number() -> int:
    """A fresh serial: 159 CSPRNG bits, positive and below 2^159 (BR 7.1: >= 64 random bits)."""
    while True:
        serial = x509.random_serial_number()
        if 0 < serial < 2**159:
            return serial


_ALIASES = {
    "o": "organization_name",
    "organization": "organization_name",
    "organizationname": "organization_name",
    "c": "country",
    "countryname": "country",
    "st": "state_or_province",
    "state": "state_or_province",
    "stateorprovincename": "state_or_province",
    "l": "locality",
    "localityname": "locality",
    "street": "street_address",
    "streetaddress": "street_address",
    "postalcode": "postal_code",
    "serialnumber": "serial_number",
    "businesscategory": "business_category",
    "jurisdictioncountryname": "jurisdiction_country",
    "jurisdictionc": "jurisdiction_country",
    "jurisdictionstateorprovincename": "jurisdiction_state_or_province",
    "jurisdictionst": "jurisdiction_state_or_province",
    "jurisdictionlocalityname": "jurisdiction_locality",
    "jurisdictionl": "jurisdiction_locality",
}


@dataclass(frozen=True)
class SubjectFields:
    """Verified organization details for OV/EV (and optionally private) subjects."""

    organization_name: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    state_or_province: str | None = None
    locality: str | None = None
    street_address: str | None = None  # EV only (BR: NOT RECOMMENDED for OV)
    postal_code: str | None = None  # EV only
    serial_number: str | None = None  # EV: registration number
    business_category: str | None = None  # EV: "Private Organization", ...
    jurisdiction_country: str | None = None  # EV
    jurisdiction_state_or_province: str | None = None  # EV
    jurisdiction_locality: str | None = None  # EV

    @classmethod
    def from_mapping(cls, data: Mapping[str, str | None] | None) -> SubjectFields:
        """Build from a dict using field names or X.500 short names (O, C, ST, L, ...).

        Unknown keys raise ``ValueError`` rather than being silently dropped, so a
        verified attribute can never vanish from a certificate unnoticed.
        """
        if data is None:
            return cls()
        if isinstance(data, SubjectFields):
            return data
        known = {f.name for f in fields(cls)}
        values: dict[str, str | None] = {}
        for key, value in data.items():
            norm = (
                key if key in known else _ALIASES.get(key.replace("_", "").replace("-", "").lower())
            )
            if norm is None:
                raise ValueError(f"unknown subject field {key!r}")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"subject field {key!r} must be a string")
            if value is not None and value.strip() != value:
                raise ValueError(f"subject field {key!r} has leading or trailing spaces")
            values[norm] = value or None
        return cls(**values)


def build_subject(
    level: ValidationLevel | str,
    subject_fields: SubjectFields | Mapping[str, str | None] | None,
    common_name: str | None = None,
) -> x509.Name:
    """The subject DN for ``level``, attributes in BR 7.1.4.2 order.

    DV ignores organization details entirely (a DV subject must not carry them).
    OV and EV require organization name and country, and state or locality.
    """
    level = ValidationLevel(level)
    sf = SubjectFields.from_mapping(subject_fields)  # type: ignore[arg-type]
    attrs: list[tuple[ObjectIdentifier, str | None]] = []
    if level is not ValidationLevel.DV:
        if level in (ValidationLevel.OV, ValidationLevel.EV):
            missing = [n for n in ("organization_name", "country") if not getattr(sf, n)]
            if missing:
                raise ValueError(f"{level.value.upper()} subject requires {', '.join(missing)}")
            if not (sf.state_or_province or sf.locality):
                raise ValueError(
                    f"{level.value.upper()} subject requires a state/province or locality"
                )
        if level is ValidationLevel.EV:
            missing = [
                n
                for n in ("serial_number", "business_category", "jurisdiction_country")
                if not getattr(sf, n)
            ]
            if missing:
                raise ValueError(f"EV subject requires {', '.join(missing)}")
        attrs += [
            (NameOID.COUNTRY_NAME, sf.country),
            (NameOID.STATE_OR_PROVINCE_NAME, sf.state_or_province),
            (NameOID.LOCALITY_NAME, sf.locality),
        ]
        if level in (ValidationLevel.EV, ValidationLevel.PRIVATE):
            attrs += [
                (NameOID.POSTAL_CODE, sf.postal_code),
                (NameOID.STREET_ADDRESS, sf.street_address),
            ]
        attrs.append((NameOID.ORGANIZATION_NAME, sf.organization_name))
        if level is ValidationLevel.EV:
            attrs += [
                (NameOID.BUSINESS_CATEGORY, sf.business_category),
                (NameOID.JURISDICTION_COUNTRY_NAME, sf.jurisdiction_country),
                (NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME, sf.jurisdiction_state_or_province),
                (NameOID.JURISDICTION_LOCALITY_NAME, sf.jurisdiction_locality),
                (NameOID.SERIAL_NUMBER, sf.serial_number),
            ]
    attrs.append((NameOID.COMMON_NAME, common_name))
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)])
            for oid, value in attrs
            if value
        ]
    )


def _issuer_ski(issuer_cert: x509.Certificate) -> x509.SubjectKeyIdentifier:
    try:
        return issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise ValueError("issuer certificate has no subject key identifier") from None


def build_tls_server_certificate(
    *,
    issuer_cert: x509.Certificate,
    subject_public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    level: ValidationLevel | str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    subject_fields: SubjectFields | Mapping[str, str | None] | None = None,
    serial: int,
    not_before: _dt.datetime,
    not_after: _dt.datetime,
    public_base_url: str,
    include_common_name: bool = False,
    private_policy_oid: str = DEFAULT_PRIVATE_POLICY_OID,
    rsa_key_encipherment: bool = False,
) -> x509.CertificateBuilder:
    """The to-be-signed subscriber certificate, as a builder ready for signing.

    ``dns_names`` must already be normalised (lower case, A-labels); validity must
    already be capped (see :mod:`.validity`). Signing is not done here so the same
    builder can be signed by a throwaway key for linting and by the CA key for real.
    """
    level = ValidationLevel(level)
    if not dns_names and not ip_addresses:
        raise ValueError("at least one name is required")
    if not 0 < serial < 2**159:
        raise ValueError("serial must be positive and below 2^159")

    general_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    general_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    first_name = dns_names[0] if dns_names else str(ipaddress.ip_address(ip_addresses[0]))
    subject = build_subject(level, subject_fields, first_name if include_common_name else None)
    urls = ca_urls(public_base_url, issuer_cert)
    is_rsa = isinstance(subject_public_key, rsa.RSAPublicKey)

    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(issuer_cert.subject)
        .subject_name(subject)
        .public_key(subject_public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa and rsa_key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(general_names), critical=len(subject) == 0)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                _issuer_ski(issuer_cert)
            ),
            critical=False,
        )
    )
    if level is ValidationLevel.PRIVATE:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_public_key), critical=False
        )
    builder = (
        builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(urls.ocsp),
                    ),
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(urls.ca_issuers),
                    ),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(
                        ObjectIdentifier(policy_oid_for(level, private_policy_oid)), None
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(urls.crl)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    )
    return builder
