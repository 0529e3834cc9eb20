"""``chancery-ledger``: the ledger's operator commands, run by the platform's staff.

    chancery-ledger verify
        prove the books: every transfer's postings sum to zero, each customer's journal
        accounts sum to zero, and every cached balance (available, reserved) equals the
        journal and the held reservations. Prints what was checked and every
        discrepancy; exits 0 when the books balance, 3 when they do not.

It reads the same CHANCERY_* environment as the service (its database URL) and only
reads: it changes nothing, so it is safe to run against production at any time.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from chancery_shared import commands
from chancery_shared.service import build
from sqlalchemy.exc import SQLAlchemyError

from chancery_ledger.journal import Verification, verify_balances
from chancery_ledger.service import LedgerService

BOOKS_DISAGREE = 3  # exit status when verify finds a discrepancy (1 is any other failure)


def _service() -> LedgerService:
    service = build("ledger")
    assert isinstance(service, LedgerService)
    return service


def report(result: Verification, out: TextIO) -> None:
    """The summary an operator reads: what was checked, then one line per discrepancy."""
    print(f"accounts checked: {result.accounts_checked}", file=out)
    print(f"transfers checked: {result.transfers_checked}", file=out)
    print(f"discrepancies: {len(result.discrepancies)}", file=out)
    if result.discrepancies:
        print(f"{'account':<36}  {'kind':<40}  {'cached':>16}  {'journal':>16}", file=out)
    for d in result.discrepancies:
        # Discrepancy.expected is what the journal says, .found what is cached or recorded
        print(f"{d.customer_account_id or '-':<36}  {d.what:<40}  {d.found!s:>16}  "
              f"{d.expected!s:>16}", file=out)
    print("the books balance" if result.ok else "THE BOOKS DO NOT BALANCE", file=out)


def cmd_verify(_args: argparse.Namespace) -> int:
    service = _service()
    try:
        with service.uow() as uow:
            result = verify_balances(uow)
    except SQLAlchemyError as exc:
        print(f"chancery-ledger: cannot read the ledger's database "
              f"({service.engine.url.render_as_string(hide_password=True)}): "
              f"{type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        service.dispose()
    report(result, sys.stdout)
    return 0 if result.ok else BOOKS_DISAGREE


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chancery-ledger", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", help="prove that every balance equals the journal (exit 3 if not)")
    verify.set_defaults(run=cmd_verify)
    return top


def main(argv: list[str] | None = None) -> int:
    return commands.run("chancery-ledger", parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
