"""Retention: entries are kept at least two years; older ones go only when an operator
says so (``chancery-audit purge --before DATE``).

A purge removes, per log, the oldest entries recorded before the date — always a
prefix of the chain, so what is left still links up: the log remembers the first entry
it kept (``first_sequence``) and the hash that entry follows (``anchor_hash``). Then the
purge records its own entry at the end of each log it shortened (who, when, how many,
up to which entry) and signs a checkpoint, so the shortened chain verifies and the
purge itself is in the log.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from chancery_shared.messaging.envelope import Context
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.problems import InvalidField
from sqlalchemy import delete, func, select

from chancery_audit.checkpoints import CheckpointSigner, sign_checkpoint
from chancery_audit.handlers import record_entry
from chancery_audit.model import AuditEntry, AuditEntryText, AuditEntryUnit, AuditLog, as_utc

#: Nothing younger than this may be purged.
MINIMUM_RETENTION = timedelta(days=730)

__all__ = ["MINIMUM_RETENTION", "Purged", "purge"]


@dataclasses.dataclass(frozen=True)
class Purged:
    log_key: str
    entries: int
    through_sequence: int


def _purgeable_through(uow: UnitOfWork, audit_log: AuditLog, before: datetime) -> int:
    """The last position of the longest prefix of the log recorded entirely before
    ``before`` (entries can arrive late, so time order is not quite log order)."""
    first_young = uow.session.execute(
        select(func.min(AuditEntry.sequence)).where(AuditEntry.log_key == audit_log.key,
                                                    AuditEntry.at >= before)).scalar()
    return (first_young - 1) if first_young is not None else audit_log.last_sequence


def purge(uow_factory, signer: CheckpointSigner, context: Context, *, before: datetime,
          now: datetime) -> list[Purged]:
    """Delete each log's entries recorded before ``before`` (at least two years ago);
    one transaction per log. Returns what was removed."""
    before = as_utc(before)
    if before > now - MINIMUM_RETENTION:
        raise InvalidField("before", "entries are kept at least two years: choose a date "
                                     f"on or before {(now - MINIMUM_RETENTION):%Y-%m-%d}")
    with uow_factory() as uow:
        keys = list(uow.session.execute(select(AuditLog.key).order_by(AuditLog.key)).scalars())
    done = []
    for key in keys:
        with uow_factory() as uow:
            audit_log = uow.session.execute(select(AuditLog).where(AuditLog.key == key)
                                            .with_for_update()).scalar_one()
            through = _purgeable_through(uow, audit_log, before)
            first = audit_log.first_sequence or 1
            if through < first:
                continue
            anchor = uow.session.execute(select(AuditEntry.hash).where(
                AuditEntry.log_key == key, AuditEntry.sequence == through)).scalar_one()
            doomed = select(AuditEntry.id).where(AuditEntry.log_key == key,
                                                 AuditEntry.sequence <= through)
            for dependent in (AuditEntryUnit, AuditEntryText):
                uow.session.execute(delete(dependent).where(dependent.entry_id.in_(doomed)))
            removed = uow.session.execute(delete(AuditEntry).where(
                AuditEntry.log_key == key, AuditEntry.sequence <= through)).rowcount
            audit_log.first_sequence, audit_log.anchor_hash = through + 1, anchor
            envelope = uow.event(
                "audit.log.purged", context.with_account(audit_log.account_id),
                subject=("audit_log", key),
                summary=f"{context.actor.user_name or context.actor.system} purged "
                        f"{removed} audit entries recorded before {before:%Y-%m-%d} "
                        f"(entries {first} to {through})",
                data={"log_key": key, "before": before.isoformat().replace("+00:00", "Z"),
                      "entries": removed, "first_sequence": first,
                      "through_sequence": through})
            record_entry(uow, envelope)  # the purge is an entry of the log it shortened
            uow.session.flush()
            sign_checkpoint(uow, signer, audit_log, now)
            uow.commit()
            done.append(Purged(key, removed, through))
    return done
