"""The CA hierarchy as the operator manages it: roots, issuing CAs, profiles, root CRLs.

Called by ``chancery-ca`` (the key ceremony and routine CA operations) and by the
development seed. The rules it keeps:

- A root's key never enters ca-signer. The root certificate is registered with the
  ``offline`` key backend; whatever the root signs — issuing CA certificates and the
  root's CRL — is signed by ``chancery-ca`` with the root key file (or HSM key) the
  operator brings to the ceremony, and only the result is stored.
- An issuing CA's key is created where it will live: encrypted under the service
  passphrase (software) or inside the HSM (PKCS#11), and never leaves it in clear.
- Two hierarchies: a root is registered as ``public`` (publicly trusted: DV, OV, EV) or
  ``private`` (the operator's own: ``private`` certificates), and its issuing CAs
  inherit it. A profile is only ever signed by an issuing CA of its hierarchy
  (``pki.profiles.PROFILE_HIERARCHY``): assignments across hierarchies are refused, and
  selection never falls back to the other hierarchy, so a private certificate can never
  chain to the public root, nor a public one to the private root.
- Each profile names the issuing CA that signs it (``profile_issuers``); rotating an
  issuing CA moves its profiles to the new one and retires the old one from signing new
  certificates, while it keeps publishing CRLs and answering OCSP for what it issued.
- Revoking an issuing CA lists it on its root's CRL, signed on the spot.

Every change is an event on the outbox (so it is in the audit log).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from chancery_shared.messaging.envelope import Actor, Context, isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import Conflict, InvalidField, NotFound
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from chancery_ca_signer.keyring import OFFLINE, PKCS11, SOFTWARE, KeyRing
from chancery_ca_signer.model import Crl, Issuer, ProfileIssuer
from chancery_ca_signer.pki import hierarchy
from chancery_ca_signer.pki.keys import CaKey, EncryptedPemKey, KeyType
from chancery_ca_signer.pki.lint import LintRejected
from chancery_ca_signer.pki.profiles import (
    CABF_POLICY_ARC,
    Hierarchy,
    PrivateProfile,
    ValidationLevel,
    hierarchy_of,
    profiles_of,
)
from chancery_ca_signer.pki.urls import issuer_id as issuer_id_of

log = logging.getLogger(__name__)

#: The profiles orders may ask for (its products' validation levels).
PROFILES = tuple(level.value for level in ValidationLevel)
HIERARCHIES = tuple(h.value for h in Hierarchy)
#: Root CRL (an ARL) lifetime: BR 4.9.7 allows at most twelve months; pkilint checks 365 days.
ROOT_CRL_VALIDITY = timedelta(days=364)
CA_TOOL = Context(actor=Actor.service("chancery-ca"), account_id=None)

__all__ = ["PROFILES", "HIERARCHIES", "NoIssuingCa", "signing_ca", "ROOT_CRL_VALIDITY",
           "register_root", "create_issuing_ca", "rotate_issuing_ca", "assign_profile",
           "revoke_issuing_ca", "sign_root_crl",
           "chain_pem", "issuer_for_profile", "profile_assignments", "get_issuer"]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def certificate_of(issuer: Issuer) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issuer.certificate_pem.encode())


def get_issuer(uow: UnitOfWork, issuer_id: str, kind: str | None = None) -> Issuer:
    issuer = uow.session.get(Issuer, issuer_id)
    if issuer is None or (kind is not None and issuer.kind != kind):
        raise NotFound(f"no {kind or 'issuer'} {issuer_id}")
    return issuer


def _announce_created(uow: UnitOfWork, issuer: Issuer, context: Context) -> None:
    uow.event("ca_signer.issuer.created", context, subject=("issuer", issuer.id),
              summary=f"{context.actor.system or 'ca-signer'} registered the {issuer.hierarchy} "
                      f"{issuer.kind} CA "
                      f"{issuer.subject} ({issuer.key_type}, key {issuer.key_backend})",
              data={"issuer_id": issuer.id, "kind": issuer.kind, "parent_id": issuer.parent_id,
                    "hierarchy": issuer.hierarchy, "subject": issuer.subject,
                    "key_type": issuer.key_type, "key_backend": issuer.key_backend,
                    "not_before": isoformat(issuer.not_before),
                    "not_after": isoformat(issuer.not_after)})


def _row(cert: x509.Certificate, kind: str, parent_id: str | None, backend: str, *,
         hierarchy: Hierarchy, encrypted_key_pem: str | None = None,
         key_reference: str | None = None) -> Issuer:
    return Issuer(id=issuer_id_of(cert), kind=kind, parent_id=parent_id,
                  hierarchy=hierarchy.value,
                  subject=cert.subject.rfc4514_string(), certificate_pem=_pem(cert),
                  key_type=KeyType.from_public_key(cert.public_key()).value,
                  key_backend=backend, encrypted_key_pem=encrypted_key_pem,
                  key_reference=key_reference, not_before=cert.not_valid_before_utc,
                  not_after=cert.not_valid_after_utc, active=True)


def _hierarchy(value: Hierarchy | str) -> Hierarchy:
    try:
        return Hierarchy(value)
    except ValueError:
        raise InvalidField("hierarchy", f"must be one of {', '.join(HIERARCHIES)}") from None


def register_root(uow: UnitOfWork, root_cert: x509.Certificate, root_key: CaKey, now: datetime,
                  context: Context = CA_TOOL, *, hierarchy: Hierarchy | str) -> Issuer:
    """Record a root certificate of ``hierarchy`` (its key stays offline) and publish its
    first CRL."""
    tree = _hierarchy(hierarchy)
    if not root_key.matches(root_cert):
        raise InvalidField("root_key", "the key does not belong to the root certificate")
    if root_cert.issuer != root_cert.subject:
        raise InvalidField("root_certificate", "a root certificate is self-issued")
    if uow.session.get(Issuer, issuer_id_of(root_cert)) is not None:
        raise Conflict("this root is already registered")
    root = _row(root_cert, "root", None, OFFLINE, hierarchy=tree)
    uow.session.add(root)
    uow.session.flush()
    _announce_created(uow, root, context)
    sign_root_crl(uow, root.id, root_key, now, context)
    return root


def _new_issuing_key(keys: KeyRing, key_type: KeyType, backend: str,
                     label: str | None) -> tuple[CaKey, dict[str, str]]:
    """A new issuing CA key where it will live, and the columns that find it again."""
    if backend == SOFTWARE:
        key = keys.new_software_key(key_type)
        return key, {"encrypted_key_pem": key.encrypted_pem.decode()}
    if backend == PKCS11:
        if keys.pkcs11 is None:
            raise InvalidField("backend", "CHANCERY_PKCS11_MODULE is not set")
        if not label:
            raise InvalidField("pkcs11_label", "a PKCS#11 key needs a label")
        from chancery_ca_signer.pki.pkcs11 import generate_key

        key = generate_key(key_type, label=label, module=keys.pkcs11.module,
                           pin=keys.pkcs11.pin)
        return key, {"key_reference": key.reference}
    raise InvalidField("backend", f"must be {SOFTWARE} or {PKCS11}")


def create_issuing_ca(uow: UnitOfWork, keys: KeyRing, root_id: str, root_key: CaKey, *,
                      key_type: KeyType, now: datetime, public_base_url: str,
                      common_name: str | None = None, backend: str = SOFTWARE,
                      pkcs11_label: str | None = None, profiles: Sequence[str] = (),
                      policy_oids: Sequence[str] | None = None,
                      private: PrivateProfile | None = None,
                      context: Context = CA_TOOL) -> Issuer:
    """Create an issuing CA under a registered root, signed with the (offline) root key.

    It belongs to its root's hierarchy and may only be given that hierarchy's
    ``profiles``. Its caIssuers and CRL URLs use ``public_base_url``, or for a private
    root ``private.base_url`` when set."""
    root = get_issuer(uow, root_id, "root")
    tree = Hierarchy(root.hierarchy)
    root_cert = certificate_of(root)
    if not root_key.matches(root_cert):
        raise InvalidField("root_key", "the key does not belong to this root")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise InvalidField("profiles", f"unknown profile(s) {', '.join(unknown)}; "
                                       f"known: {', '.join(PROFILES)}")
    trees = {hierarchy_of(p) for p in profiles}
    if len(trees) > 1:
        raise InvalidField("profiles", f"{', '.join(profiles)} mixes public and private "
                                       "profiles; an issuing CA signs for one hierarchy only")
    if trees and trees != {tree}:
        raise InvalidField("profiles", f"a {tree.value} issuing CA signs only "
                                       f"{', '.join(profiles_of(tree))}, not "
                                       f"{', '.join(profiles)}")
    if tree is Hierarchy.PRIVATE:
        cabf = [oid for oid in policy_oids or () if oid.startswith(CABF_POLICY_ARC + ".")]
        if cabf:
            raise InvalidField("policy_oids", f"{', '.join(cabf)} is a CA/B Forum policy OID; "
                                              "a private issuing CA must not assert it")
        public_base_url = (private or PrivateProfile()).url_base(public_base_url)
    organization = root_cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    country = root_cert.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)
    org = str(organization[0].value) if organization else "Chancery"
    family = "ECC" if KeyType(key_type).is_ec else "RSA"
    kind = "Private TLS" if tree is Hierarchy.PRIVATE else "TLS"
    key, columns = _new_issuing_key(keys, KeyType(key_type), backend, pkcs11_label)
    try:
        cert = hierarchy.create_issuing_ca(
            root_cert, root_key, key,
            common_name=common_name or f"{org} {kind} {family} Issuing CA {now:%Y}",
            organization=org, country=str(country[0].value) if country else "US",
            public_base_url=public_base_url, now=now, policy_oids=policy_oids, hierarchy=tree)
    except (ValueError, LintRejected) as exc:
        raise InvalidField("issuing_ca", str(exc)) from None
    issuing = _row(cert, "issuing", root.id, backend, hierarchy=tree, **columns)
    uow.session.add(issuing)
    uow.session.flush()
    _announce_created(uow, issuing, context)
    for profile in profiles:
        assign_profile(uow, profile, issuing.id, context)
    return issuing


def rotate_issuing_ca(uow: UnitOfWork, keys: KeyRing, issuer_id: str, root_key: CaKey, *,
                      now: datetime, public_base_url: str, pkcs11_label: str | None = None,
                      private: PrivateProfile | None = None,
                      context: Context = CA_TOOL) -> Issuer:
    """A new key and certificate replacing ``issuer_id``: same key type, backend and
    name; its profiles move to the new CA; the old one stops signing new certificates."""
    old = get_issuer(uow, issuer_id, "issuing")
    if not old.active:
        raise Conflict(f"issuing CA {old.id} is not active")
    if old.key_backend == PKCS11 and not pkcs11_label:
        raise InvalidField("pkcs11_label", "the new HSM key needs a label of its own")
    old_cert = certificate_of(old)
    common_name = old_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    policies = old_cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    new = create_issuing_ca(
        uow, keys, old.parent_id or "", root_key, key_type=KeyType(old.key_type or
                                                                  KeyType.from_public_key(
                                                                      old_cert.public_key())),
        now=now, public_base_url=public_base_url, common_name=str(common_name),
        backend=old.key_backend, pkcs11_label=pkcs11_label,
        policy_oids=[p.policy_identifier.dotted_string for p in policies], private=private,
        context=context)
    moved = [row.profile for row in uow.session.execute(
        select(ProfileIssuer).where(ProfileIssuer.issuer_id == old.id)).scalars()]
    for profile in moved:
        assign_profile(uow, profile, new.id, context)
    old.active = False
    uow.event("ca_signer.issuer.retired", context, subject=("issuer", old.id),
              summary=f"chancery-ca retired issuing CA {old.subject} ({old.id}) in favour of "
                      f"{new.id}; it still publishes CRLs and answers OCSP for what it issued",
              data={"issuer_id": old.id, "replaced_by": new.id, "profiles": moved})
    return new


def assign_profile(uow: UnitOfWork, profile: str, issuer_id: str,
                   context: Context = CA_TOOL) -> None:
    """Make ``issuer_id`` the CA that signs ``profile`` from now on; it must be of the
    profile's hierarchy."""
    if profile not in PROFILES:
        raise InvalidField("profile", f"must be one of {', '.join(PROFILES)}")
    issuer = get_issuer(uow, issuer_id, "issuing")
    wanted = hierarchy_of(profile)
    if issuer.hierarchy != wanted.value:
        raise Conflict(f"issuing CA {issuer.id} is of the {issuer.hierarchy} hierarchy; the "
                       f"{profile} profile is signed only by a {wanted.value} issuing CA "
                       f"(one under a {wanted.value} root)")
    if not issuer.active or issuer.revoked_at is not None:
        raise Conflict(f"issuing CA {issuer.id} does not sign new certificates")
    row = uow.session.get(ProfileIssuer, profile)
    previous = row.issuer_id if row else None
    if row is None:
        uow.session.add(ProfileIssuer(profile=profile, issuer_id=issuer.id))
    else:
        row.issuer_id = issuer.id
    uow.event("ca_signer.profile.assigned", context, subject=("issuer", issuer.id),
              summary=f"chancery-ca assigned the {profile} profile to {issuer.subject} "
                      f"({issuer.id})",
              data={"profile": profile, "issuer_id": issuer.id,
                    "previous_issuer_id": previous})


def profile_assignments(uow: UnitOfWork) -> dict[str, str]:
    return {row.profile: row.issuer_id
            for row in uow.session.execute(select(ProfileIssuer)).scalars()}


class NoIssuingCa(Exception):
    """No issuing CA may sign this profile now; the message says why (for the rejection)."""


def signing_ca(uow: UnitOfWork, profile: str) -> Issuer:
    """The CA that signs ``profile``: the assigned one, else the newest active issuing CA
    of the profile's hierarchy. Never one of the other hierarchy: :class:`NoIssuingCa`
    instead, naming what is missing."""
    try:
        wanted = hierarchy_of(profile)
    except ValueError:
        raise NoIssuingCa(f"unknown profile {profile!r}") from None
    row = uow.session.get(ProfileIssuer, profile)
    if row is not None:
        issuer = uow.session.get(Issuer, row.issuer_id)
        if issuer is None or not issuer.active or issuer.revoked_at is not None:
            # assigned to a CA that may no longer sign: refuse, do not guess
            raise NoIssuingCa(f"no issuing CA is configured for this profile: {profile} is "
                              f"assigned to issuing CA {row.issuer_id}, which no longer signs")
        if issuer.hierarchy != wanted.value:
            raise NoIssuingCa(f"no {wanted.value} issuing CA is configured for the {profile} "
                              f"profile: it is assigned to {issuer.hierarchy} issuing CA "
                              f"{issuer.id}, which never signs it")
        return issuer
    issuer = uow.session.execute(
        select(Issuer).where(Issuer.kind == "issuing", Issuer.hierarchy == wanted.value,
                             Issuer.active.is_(True), Issuer.revoked_at.is_(None))
        .order_by(Issuer.created_at.desc(), Issuer.not_before.desc())).scalars().first()
    if issuer is None:
        raise NoIssuingCa(f"no {wanted.value} issuing CA is configured for the {profile} "
                          f"profile (it is signed only by an issuing CA under a "
                          f"{wanted.value} root)")
    return issuer


def issuer_for_profile(uow: UnitOfWork, profile: str) -> Issuer | None:
    """:func:`signing_ca`, or None when no CA may sign ``profile``."""
    try:
        return signing_ca(uow, profile)
    except NoIssuingCa:
        return None


def revoke_issuing_ca(uow: UnitOfWork, issuer_id: str, reason: str, root_key: CaKey,
                      now: datetime, context: Context = CA_TOOL) -> Crl:
    """Revoke an issuing CA: it stops signing, and its root's CRL lists it at once.

    The profiles it signed are refused until they are assigned to another CA."""
    from chancery_ca_signer.handlers import REVOCATION_REASONS

    issuing = get_issuer(uow, issuer_id, "issuing")
    if issuing.revoked_at is not None:
        raise Conflict(f"issuing CA {issuing.id} is already revoked")
    if reason not in REVOCATION_REASONS:
        raise InvalidField("reason", f"must be one of {', '.join(REVOCATION_REASONS)}")
    root = get_issuer(uow, issuing.parent_id or "", "root")
    if not root_key.matches(certificate_of(root)):
        raise InvalidField("root_key", "the key does not belong to this CA's root")
    issuing.revoked_at, issuing.revocation_reason = now.replace(microsecond=0), reason
    issuing.active = False  # its profiles stay assigned to it, so they are refused
    # until the operator assigns them to another CA: the signer never guesses
    uow.event("ca_signer.issuer.revoked", context, subject=("issuer", issuing.id),
              summary=f"chancery-ca revoked issuing CA {issuing.subject} ({reason})",
              data={"issuer_id": issuing.id, "reason": reason,
                    "revoked_at": isoformat(issuing.revoked_at)})
    return sign_root_crl(uow, root.id, root_key, now, context)


def sign_root_crl(uow: UnitOfWork, root_id: str, root_key: CaKey, now: datetime,
                  context: Context = CA_TOOL) -> Crl:
    """Sign the root's next CRL (valid ROOT_CRL_VALIDITY) with the root key brought in."""
    from chancery_ca_signer.handlers import publish_crl

    root = get_issuer(uow, root_id, "root")
    if not root_key.matches(certificate_of(root)):
        raise InvalidField("root_key", "the key does not belong to this root")
    return publish_crl(uow, None, root, now, key=root_key, validity=ROOT_CRL_VALIDITY,
                       context=context)


def chain_pem(uow: UnitOfWork, issuer_id: str) -> str:
    """The issuer's certificate followed by its parents' up to the root, PEM."""
    issuer: Issuer | None = get_issuer(uow, issuer_id)
    parts = []
    while issuer is not None:
        parts.append(issuer.certificate_pem.strip() + "\n")
        issuer = uow.session.get(Issuer, issuer.parent_id) if issuer.parent_id else None
    return "".join(parts)


def development_hierarchy(uow: UnitOfWork, keys: KeyRing, public_base_url: str,
                          now: datetime, private: PrivateProfile | None = None) -> bool:
    """First start in development: both hierarchies, each a root (whose key is then thrown
    away) and an ECDSA issuing CA: the public one signs dv, ov and ev, the private one
    signs private. A hierarchy that already has a root is left alone (so a database
    seeded before private hierarchies existed gains one). False if nothing was made."""
    have = set(uow.session.execute(select(Issuer.hierarchy).where(Issuer.kind == "root"))
               .scalars())
    context = Context(actor=Actor.service("ca-signer"), account_id=None)
    made = False
    for tree, name in ((Hierarchy.PUBLIC, ""), (Hierarchy.PRIVATE, " Private")):
        if tree.value in have:
            continue
        root_key = EncryptedPemKey.generate(KeyType.EC_P384, keys.passphrase)
        root_cert = hierarchy.create_root_ca(
            root_key, common_name=f"Chancery Development{name} Root CA",
            organization="Chancery Development", country="US", now=now)
        root = register_root(uow, root_cert, root_key, now, context, hierarchy=tree)
        issuing = create_issuing_ca(uow, keys, root.id, root_key, key_type=KeyType.EC_P256,
                                    now=now, public_base_url=public_base_url,
                                    common_name=f"Chancery Development{name} TLS ECC "
                                                "Issuing CA",
                                    profiles=profiles_of(tree), private=private,
                                    context=context)
        log.warning("created a development %s CA hierarchy: root %s (key discarded), "
                    "issuing CA %s", tree.value, root.id, issuing.id)
        made = True
    return made
