"""``chancery-audit``: checking and keeping the audit logs, run by the platform's staff.

    chancery-audit verify [--account ID]
        check every log's hash chain and signed checkpoints (or one account's log);
        prints one line per log; exit status 3 when any log is broken
    chancery-audit checkpoint
        sign a checkpoint of every log that grew since its last one, now
    chancery-audit purge --before YYYY-MM-DD --operator NAME
        delete entries recorded before the date (at least two years ago) whose
        certificates, orders and CAs also ended before it (BR 5.4.3), as a prefix of
        each log; each log it shortens gets an entry saying so and a new checkpoint;
        prints how many older entries each log kept, and why

They read the service's CHANCERY_* environment (its database, the key passphrase).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime

from chancery_shared import commands
from chancery_shared.messaging.envelope import Actor, Context, utcnow
from chancery_shared.service import build

from chancery_audit import checkpoints, retention
from chancery_audit.service import AuditService
from chancery_audit.verify import verify_logs


def _service() -> AuditService:
    service = build("audit")
    assert isinstance(service, AuditService)
    return service


def cmd_verify(args: argparse.Namespace) -> int:
    service = _service()
    with service.uow() as uow:
        results = verify_logs(uow.session, args.account, every=args.account is None)
    for result in results:
        if result.ok:
            print(f"{result.log_key}: ok, {result.entries_checked} entries, "
                  f"{result.checkpoints_checked} checkpoints, head {result.head_hash}")
        else:
            bad = result.first_bad
            assert bad is not None
            print(f"{result.log_key}: BROKEN at entry {bad.sequence} ({bad.problem}): "
                  f"{bad.detail}" + (f" [entry {bad.entry_id}]" if bad.entry_id else ""))
    broken = [r for r in results if not r.ok]
    print(f"{len(results)} log(s) checked, {len(broken)} broken")
    return 3 if broken else 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    service = _service()
    signed = checkpoints.sign_due_checkpoints(service.uow, service.signer, utcnow())
    print(f"signed {len(signed)} checkpoint(s)")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    service = _service()
    before = datetime.fromisoformat(args.before)
    if before.tzinfo is None:
        before = before.replace(tzinfo=UTC)
    who = Context(actor=Actor(user_id=f"operator:{getpass.getuser()}",
                              user_name=args.operator), account_id=None)
    done = retention.purge(service.uow, service.signer, who, before=before, now=utcnow())
    for purged in done:
        print(f"{purged.log_key}: purged {purged.entries} entries (through entry "
              f"{purged.through_sequence}), kept {purged.kept_total} recorded before "
              f"{before:%Y-%m-%d}")
        for reason, text in retention.KEPT_REASONS.items():
            if purged.kept.get(reason):
                print(f"  kept {purged.kept[reason]} {text}")
    print(f"{sum(1 for p in done if p.entries)} log(s) shortened, "
          f"{sum(p.entries for p in done)} entries purged, "
          f"{sum(p.kept_total for p in done)} older entries kept")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="chancery-audit", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    p = commands.add_parser("verify", help="check the hash chains and checkpoints")
    p.add_argument("--account", help="only this account's log")
    p.set_defaults(run=cmd_verify)
    p = commands.add_parser("checkpoint", help="sign checkpoints of logs that grew")
    p.set_defaults(run=cmd_checkpoint)
    p = commands.add_parser("purge", help="delete entries whose retention has ended")
    p.add_argument("--before", required=True, help="YYYY-MM-DD: delete entries before it")
    p.add_argument("--operator", required=True, help="your name, recorded in the log")
    p.set_defaults(run=cmd_purge)
    return top


def main(argv: list[str] | None = None) -> int:
    return commands.run("chancery-audit", parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
