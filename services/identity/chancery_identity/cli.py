"""``chancery-identity``: identity's administrative commands, run by the platform's staff.

    chancery-identity create-operator --email E --name N
        the first (or another) platform operator, in production without the development
        seed; the password comes from CHANCERY_OPERATOR_PASSWORD or the first line of
        standard input
    chancery-identity rotate-signing-key [--now]
        publish a new access-token signing key (it signs after
        CHANCERY_TOKEN_KEY_PREPUBLISH_SECONDS, or at once with --now)
    chancery-identity unlock --email E
        lift a user's sign-in lockout

They read the same CHANCERY_* environment as the service (its database URL, the key
passphrase) and act through the same handlers, so each one is an audited event.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from chancery_shared import commands
from chancery_shared.messaging.envelope import Actor, Context
from chancery_shared.service import build

from chancery_identity import handlers
from chancery_identity.service import IdentityService

CLI_ACTOR = Actor.service("identity-cli")


def _service() -> IdentityService:
    service = build("identity")
    assert isinstance(service, IdentityService)
    return service


def _password() -> str:
    password = os.environ.get("CHANCERY_OPERATOR_PASSWORD")
    if password:
        return password
    if sys.stdin.isatty():
        return getpass.getpass("password for the new operator: ")
    return sys.stdin.readline().rstrip("\n")


def cmd_create_operator(args: argparse.Namespace) -> int:
    service = _service()
    with service.uow() as uow:
        operator = handlers.create_operator(
            uow, service.credentials.passwords, Context(actor=CLI_ACTOR, account_id=None),
            email=args.email, name=args.name, password=_password(), now=service.clock())
    print(f"created platform operator {operator.email} ({operator.id})")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    key = _service().rotate_signing_key(immediately=args.now, actor=CLI_ACTOR)
    print(f"new signing key {key.describe()}")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    service = _service()
    with service.uow() as uow:
        user = handlers.unlock_by_email(uow, Context(actor=CLI_ACTOR, account_id=None),
                                        args.email, service.clock())
    print(f"{user.email} may sign in again")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chancery-identity", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-operator", help="create a platform operator")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.set_defaults(run=cmd_create_operator)
    rotate = commands.add_parser("rotate-signing-key", help="rotate the token signing key")
    rotate.add_argument("--now", action="store_true",
                        help="sign with the new key at once (no pre-publication)")
    rotate.set_defaults(run=cmd_rotate)
    unlock = commands.add_parser("unlock", help="lift a user's sign-in lockout")
    unlock.add_argument("--email", required=True)
    unlock.set_defaults(run=cmd_unlock)
    return top


def main(argv: list[str] | None = None) -> int:
    return commands.run("chancery-identity", parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
