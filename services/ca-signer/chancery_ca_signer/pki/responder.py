"""Delegated OCSP responder certificates (RFC 6960 4.2.2.2, BR 7.1.2.8).

Each issuing CA hands the signing of its OCSP answers to a short-lived responder key,
so the CA key (possibly in an HSM) is used once per responder period instead of once
per answer. The responder certificate is issued by that CA and carries:

- extKeyUsage id-kp-OCSPSigning only, keyUsage digitalSignature (critical);
- id-pkix-ocsp-nocheck, so clients do not ask for the responder's own status (which is
  why its validity is short);
- authorityKeyIdentifier of the CA, subjectKeyIdentifier of the responder key;
- subject C and O of the CA, CN "<CA common name> OCSP Responder".

It is linted as pkilint's OCSP_RESPONDER type before the CA key signs it.
"""

from __future__ import annotations

import datetime as _dt

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .hierarchy import ca_subject
from .keys import CaKey, CaPublicKey, KeyType
from .lint import lint_certificate, lint_then_sign
from .profiles import new_serial_number
from .validity import truncate_to_seconds

__all__ = ["RESPONDER_VALIDITY", "RESPONDER_RENEW_BEFORE", "responder_key_type",
           "create_responder_certificate"]

#: Lifetime of a responder certificate. With ocsp-nocheck it cannot be revoked in any
#: way a client checks, so it is kept short; answers last 4 days, so 30 days leaves
#: room to renew well before any answer outlives its signer.
RESPONDER_VALIDITY = _dt.timedelta(days=30)
#: A responder whose certificate has less than this left is replaced.
RESPONDER_RENEW_BEFORE = _dt.timedelta(days=10)
_ONE_SECOND = _dt.timedelta(seconds=1)

_RESPONDER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False)


def responder_key_type(issuer_key_type: KeyType) -> KeyType:
    """The responder's key type: the same family as its CA's, at the common size.

    Clients that accept the CA's signature algorithm then accept the responder's.
    """
    return KeyType.RSA_2048 if KeyType(issuer_key_type).is_rsa else KeyType.EC_P256


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    if not values:
        raise ValueError(f"the issuer's subject has no {oid._name}")
    return str(values[0].value)


def create_responder_certificate(
    issuer_cert: x509.Certificate,
    issuer_key: CaKey,
    responder_public_key: CaPublicKey,
    *,
    now: _dt.datetime,
    validity: _dt.timedelta = RESPONDER_VALIDITY,
) -> x509.Certificate:
    """Issue a delegated OCSP responder certificate for ``issuer_cert``'s answers."""
    if not issuer_key.matches(issuer_cert):
        raise ValueError("issuer_key does not belong to issuer_cert")
    KeyType.from_public_key(responder_public_key)
    not_before = truncate_to_seconds(now)
    not_after = min(not_before + validity - _ONE_SECOND, issuer_cert.not_valid_after_utc)
    if not_after <= not_before:
        raise ValueError("the issuer expires before a responder could be valid")
    subject = issuer_cert.subject
    common_name = _attribute(subject, NameOID.COMMON_NAME)
    issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .serial_number(new_serial_number())
        .issuer_name(subject)
        .subject_name(ca_subject(f"{common_name} OCSP Responder"[:64],
                                 _attribute(subject, NameOID.ORGANIZATION_NAME),
                                 _attribute(subject, NameOID.COUNTRY_NAME)))
        .public_key(responder_public_key)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_RESPONDER_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(responder_public_key),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
                       critical=False)
    )
    return lint_then_sign(builder, issuer_key,
                          lambda der: lint_certificate(der, "OCSP_RESPONDER")).certificate
