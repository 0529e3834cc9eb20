"""``chancery-ca``: the CA hierarchy's ceremonies and routine operations.

    chancery-ca create-root --hierarchy public|private --common-name CN
                            --organization O --country C --key-out FILE --cert-out FILE
                            [--key-type ec-p384] [--validity-days 7305]
                            [--pkcs11-label LABEL]
        a new root of the public (dv, ov, ev) or the private (private) hierarchy: its key
        is written encrypted to FILE (or made in the HSM) and never stored by ca-signer;
        the certificate is registered and the first root CRL signed
    chancery-ca create-issuing --root ROOT_ID --root-key FILE|pkcs11:URI
                               [--key-type ec-p256] [--backend software|pkcs11]
                               [--pkcs11-label LABEL] [--common-name CN]
                               [--profiles dv,ov,ev | private] [--policy-oid OID ...]
        an issuing CA signed by the root, of the root's hierarchy (and only its
        profiles); its key is encrypted under the service passphrase or made in the HSM
    chancery-ca rotate-issuing ISSUER_ID --root-key ... [--pkcs11-label LABEL]
        a new key and certificate replacing ISSUER_ID; its profiles move to the new CA
    chancery-ca assign-profile PROFILE ISSUER_ID
        which issuing CA signs dv, ov, ev (a public one) or private (a private one)
        certificates from now on
    chancery-ca revoke-issuing ISSUER_ID --reason R --root-key ...
        revoke an issuing CA and sign the root CRL listing it
    chancery-ca sign-root-crl ROOT_ID --root-key ...
        the root's next CRL (valid 364 days; run it well before the last one runs out)
    chancery-ca export-chain ISSUER_ID [--out FILE]
        the issuer's certificate and its parents' up to the root, PEM
    chancery-ca list
        every CA, its key, state and profiles

The root key file is PKCS#8 encrypted under the root passphrase, read from
--root-passphrase-file or CHANCERY_ROOT_KEY_PASSPHRASE (never from the command line).
It is only needed by create-root, create-issuing, rotate-issuing, revoke-issuing and
sign-root-crl: keep it offline the rest of the time. A root key in an HSM is named by
its PKCS#11 URI instead (with CHANCERY_PKCS11_MODULE and CHANCERY_PKCS11_PIN_FILE).
The commands read the service's CHANCERY_* environment (database, passphrase,
public base URL) and each change is an event in the audit log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from chancery_shared import commands
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.service import build
from cryptography.hazmat.primitives import serialization

from chancery_ca_signer import authorities, handlers
from chancery_ca_signer.pki import hierarchy
from chancery_ca_signer.pki.keys import CaKey, CaKeyError, EncryptedPemKey, KeyType
from chancery_ca_signer.service import CaSignerService


class UsageError(Exception):
    """A command-line mistake: printed, exit status 2."""


def _service() -> CaSignerService:
    service = build("ca-signer")
    assert isinstance(service, CaSignerService)
    return service


def _root_passphrase(args: argparse.Namespace) -> bytes:
    if args.root_passphrase_file:
        return Path(args.root_passphrase_file).read_bytes().strip()
    value = os.environ.get("CHANCERY_ROOT_KEY_PASSPHRASE", "")
    if not value:
        raise UsageError("the root key passphrase comes from --root-passphrase-file or "
                         "CHANCERY_ROOT_KEY_PASSPHRASE")
    return value.encode()


def _root_key(service: CaSignerService, args: argparse.Namespace) -> CaKey:
    """The root key the operator brought: an encrypted PKCS#8 file or a PKCS#11 URI."""
    if args.root_key.startswith("pkcs11:"):
        settings = service.keys.pkcs11
        if settings is None:
            raise UsageError("a pkcs11: root key needs CHANCERY_PKCS11_MODULE")
        from chancery_ca_signer.pki.pkcs11 import open_key

        return open_key(args.root_key, module=settings.module, pin=settings.pin)
    try:
        pem = Path(args.root_key).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the root key: {exc.strerror}") from None
    return EncryptedPemKey.load(pem, _root_passphrase(args))


def _write_private(path: str, data: bytes) -> None:
    """Create ``path`` readable by its owner only; never overwrite a key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def cmd_create_root(args: argparse.Namespace) -> int:
    service = _service()
    key_type = KeyType(args.key_type)
    if Path(args.cert_out).exists():
        raise UsageError(f"{args.cert_out} exists; refusing to overwrite it")
    if args.pkcs11_label:
        settings = service.keys.pkcs11
        if settings is None:
            raise UsageError("--pkcs11-label needs CHANCERY_PKCS11_MODULE")
        from chancery_ca_signer.pki.pkcs11 import generate_key

        key: CaKey = generate_key(key_type, label=args.pkcs11_label, module=settings.module,
                                  pin=settings.pin)
        where = getattr(key, "reference", args.pkcs11_label)
    else:
        if not args.key_out:
            raise UsageError("--key-out is required for a software root key")
        if Path(args.key_out).exists():
            raise UsageError(f"{args.key_out} exists; refusing to overwrite a key")
        key = EncryptedPemKey.generate(key_type, _root_passphrase(args))
        _write_private(args.key_out, key.encrypted_pem)
        where = args.key_out
    now = utcnow()
    cert = hierarchy.create_root_ca(key, common_name=args.common_name,
                                    organization=args.organization, country=args.country,
                                    now=now, validity_days=args.validity_days)
    Path(args.cert_out).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with service.uow() as uow:
        root = authorities.register_root(uow, cert, key, now, hierarchy=args.hierarchy)
        uow.commit()
        print(f"{root.hierarchy} root {root.id}: {root.subject}\n"
              f"  certificate: {args.cert_out}\n"
              f"  key: {where} (keep it offline)")
    return 0


def _profiles(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def cmd_create_issuing(args: argparse.Namespace) -> int:
    service = _service()
    root_key = _root_key(service, args)
    with service.uow() as uow:
        issuing = authorities.create_issuing_ca(
            uow, service.keys, args.root, root_key, key_type=KeyType(args.key_type),
            now=utcnow(), public_base_url=service.settings.public_base_url,
            common_name=args.common_name, backend=args.backend,
            pkcs11_label=args.pkcs11_label, profiles=_profiles(args.profiles),
            policy_oids=args.policy_oid or None, private=service.private)
        uow.commit()
        print(f"{issuing.hierarchy} issuing CA {issuing.id}: {issuing.subject} "
              f"({issuing.key_type}, "
              f"key {issuing.key_backend})")
    return 0


def cmd_rotate_issuing(args: argparse.Namespace) -> int:
    service = _service()
    root_key = _root_key(service, args)
    with service.uow() as uow:
        new = authorities.rotate_issuing_ca(uow, service.keys, args.issuer_id, root_key,
                                            now=utcnow(),
                                            public_base_url=service.settings.public_base_url,
                                            pkcs11_label=args.pkcs11_label,
                                            private=service.private)
        uow.commit()
        print(f"issuing CA {new.id} replaces {args.issuer_id}: {new.subject}")
    return 0


def cmd_assign_profile(args: argparse.Namespace) -> int:
    service = _service()
    with service.uow() as uow:
        authorities.assign_profile(uow, args.profile, args.issuer_id)
        uow.commit()
    print(f"{args.profile} certificates are signed by {args.issuer_id} from now on")
    return 0


def cmd_revoke_issuing(args: argparse.Namespace) -> int:
    service = _service()
    root_key = _root_key(service, args)
    with service.uow() as uow:
        crl = authorities.revoke_issuing_ca(uow, args.issuer_id, args.reason, root_key,
                                            utcnow())
        uow.commit()
        print(f"issuing CA {args.issuer_id} revoked; root CRL number {crl.number} lists "
              f"{crl.entries} revoked CA(s)")
    return 0


def cmd_sign_root_crl(args: argparse.Namespace) -> int:
    service = _service()
    root_key = _root_key(service, args)
    with service.uow() as uow:
        crl = authorities.sign_root_crl(uow, args.root_id, root_key, utcnow())
        uow.commit()
        print(f"root CRL number {crl.number}: {crl.entries} revoked CA(s), next update "
              f"{handlers.as_utc(crl.next_update):%Y-%m-%d %H:%M}Z")
    return 0


def cmd_export_chain(args: argparse.Namespace) -> int:
    service = _service()
    with service.uow() as uow:
        pem = authorities.chain_pem(uow, args.issuer_id)
    if args.out:
        Path(args.out).write_text(pem)
    else:
        sys.stdout.write(pem)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    service = _service()
    with service.uow() as uow:
        rows = handlers.issuer_summaries(uow)
    for row in rows:
        state = ("revoked" if row["revoked_at"] else "active" if row["active"] else "retired")
        print(f"{row['id']}  {row['hierarchy']:<7}  {row['kind']:<7}  {state:<7}  "
              f"{row['key_type'] or '?':<8}  "
              f"{row['key_backend']:<8}  until {handlers.as_utc(row['not_after']):%Y-%m-%d}  "
              f"{','.join(row['profiles']) or '-':<18}  {row['subject']}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chancery-ca", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    key_types = [k.value for k in KeyType]

    def with_root_key(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root-key", required=True,
                       help="the root's encrypted PKCS#8 file, or its pkcs11: URI")
        p.add_argument("--root-passphrase-file",
                       help="file holding the root key passphrase "
                            "(else CHANCERY_ROOT_KEY_PASSPHRASE)")

    p = commands.add_parser("create-root", help="a new root CA (key kept offline)")
    p.add_argument("--hierarchy", required=True, choices=authorities.HIERARCHIES,
                   help="public: its issuing CAs sign dv, ov, ev; private: they sign "
                        "private (never both)")
    p.add_argument("--common-name", required=True)
    p.add_argument("--organization", required=True)
    p.add_argument("--country", required=True)
    p.add_argument("--key-type", default=KeyType.EC_P384.value, choices=key_types)
    p.add_argument("--validity-days", type=int, default=hierarchy.DEFAULT_ROOT_VALIDITY_DAYS)
    p.add_argument("--key-out", help="where to write the encrypted root key (created 0600)")
    p.add_argument("--cert-out", required=True)
    p.add_argument("--pkcs11-label", help="make the root key in the HSM under this label")
    p.add_argument("--root-passphrase-file")
    p.set_defaults(run=cmd_create_root)

    p = commands.add_parser("create-issuing", help="a new issuing CA under a root")
    p.add_argument("--root", required=True, help="the root's issuer id")
    with_root_key(p)
    p.add_argument("--key-type", default=KeyType.EC_P256.value, choices=key_types)
    p.add_argument("--backend", default="software", choices=["software", "pkcs11"])
    p.add_argument("--pkcs11-label")
    p.add_argument("--common-name")
    p.add_argument("--profiles", help="comma-separated, of the root's hierarchy: some of "
                                      "dv,ov,ev (public) or private (private)")
    p.add_argument("--policy-oid", action="append",
                   help="certificate policy OID (repeatable; default anyPolicy)")
    p.set_defaults(run=cmd_create_issuing)

    p = commands.add_parser("rotate-issuing", help="replace an issuing CA with a new key")
    p.add_argument("issuer_id")
    with_root_key(p)
    p.add_argument("--pkcs11-label", help="label of the new HSM key (HSM-backed CAs)")
    p.set_defaults(run=cmd_rotate_issuing)

    p = commands.add_parser("assign-profile", help="choose the issuing CA of a profile")
    p.add_argument("profile", choices=authorities.PROFILES)
    p.add_argument("issuer_id")
    p.set_defaults(run=cmd_assign_profile)

    p = commands.add_parser("revoke-issuing", help="revoke an issuing CA (root CRL)")
    p.add_argument("issuer_id")
    p.add_argument("--reason", required=True, choices=handlers.REVOCATION_REASONS)
    with_root_key(p)
    p.set_defaults(run=cmd_revoke_issuing)

    p = commands.add_parser("sign-root-crl", help="sign the root's next CRL")
    p.add_argument("root_id")
    with_root_key(p)
    p.set_defaults(run=cmd_sign_root_crl)

    p = commands.add_parser("export-chain", help="print an issuer's chain, PEM")
    p.add_argument("issuer_id")
    p.add_argument("--out")
    p.set_defaults(run=cmd_export_chain)

    p = commands.add_parser("list", help="every CA with its key, state and profiles")
    p.set_defaults(run=cmd_list)
    return top


def main(argv: list[str] | None = None) -> int:
    # CaKeyError messages never hold key material or passphrases
    return commands.run("chancery-ca", parser(), argv, usage_errors=(UsageError,),
                        failures=(CaKeyError,))


if __name__ == "__main__":
    sys.exit(main())
