"""Checking a log: its chain, its head, and the signed checkpoints it must still reach.

The first problem found is named by its position in the log (``sequence``) and, when
the row exists, its entry id. What each finding means:

- ``missing``: no entry at this position (deleted), though later ones exist;
- ``out_of_order``: the entry does not follow the one before it (inserted, moved or
  reordered entries, or a deleted one whose successors were renumbered);
- ``modified``: the entry's content no longer gives its hash (edited);
- ``truncated``: the log stops before its recorded end, or before a signed checkpoint;
- ``inserted``: entries go on past the log's recorded end;
- ``head_mismatch``: the chain does not end at the head the log recorded;
- ``checkpoint_mismatch``: the entry at a checkpoint's position is not the one signed;
- ``bad_signature``: a checkpoint's signature does not verify.

Entries are read in batches of a few thousand, so a log of millions is checked in
bounded memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from chancery_audit import chain
from chancery_audit.checkpoints import verify_signature
from chancery_audit.model import AuditCheckpoint, AuditEntry, AuditLog

BATCH = 2000

__all__ = ["Finding", "LogVerification", "verify_log", "verify_logs"]


@dataclasses.dataclass(frozen=True)
class Finding:
    sequence: int
    entry_id: str | None
    problem: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LogVerification:
    log_key: str
    ok: bool
    entries_checked: int
    head_hash: str | None
    first_bad: Finding | None = None
    checkpoints_checked: int = 0


def _entries(session: Session, log_key: str) -> Iterator[AuditEntry]:
    after = None
    while True:
        query = (select(AuditEntry).where(AuditEntry.log_key == log_key)
                 .options(selectinload(AuditEntry.units))
                 .order_by(AuditEntry.sequence).limit(BATCH))
        if after is not None:
            query = query.where(AuditEntry.sequence > after)
        batch = list(session.execute(query).scalars())
        if not batch:
            return
        yield from batch
        after = batch[-1].sequence
        session.expunge_all()


def verify_log(session: Session, audit_log: AuditLog) -> LogVerification:
    """Walk ``audit_log``'s chain from its first kept entry; stop at the first problem."""
    key = audit_log.key
    first, last = audit_log.first_sequence or 1, audit_log.last_sequence or 0
    head = audit_log.head_hash
    checkpoints = list(session.execute(
        select(AuditCheckpoint).where(AuditCheckpoint.log_key == key)
        .order_by(AuditCheckpoint.sequence)).scalars())
    wanted = {c.sequence: c for c in checkpoints if c.sequence >= first}
    for checkpoint in checkpoints:
        if not verify_signature(session, checkpoint):
            return LogVerification(key, False, 0, head, Finding(
                checkpoint.sequence, None, "bad_signature",
                f"the checkpoint of entry {checkpoint.sequence} signed at "
                f"{checkpoint.signed_at} does not verify"), len(checkpoints))
    previous = audit_log.anchor_hash or chain.genesis(key)
    expected = first
    checked = 0

    def bad(sequence: int, entry_id: str | None, problem: str, detail: str) -> LogVerification:
        return LogVerification(key, False, checked, head,
                               Finding(sequence, entry_id, problem, detail), len(checkpoints))

    for entry in _entries(session, key):
        if entry.sequence != expected:
            if entry.sequence > expected:
                return bad(expected, None, "missing",
                           f"entry {expected} is missing; the next one is {entry.sequence}")
            return bad(entry.sequence, entry.id, "out_of_order",
                       f"entry {entry.sequence} comes before entry {expected}")
        if entry.prev_hash != previous:
            return bad(entry.sequence, entry.id, "out_of_order",
                       f"entry {entry.sequence} does not follow entry {entry.sequence - 1}")
        if chain.entry_hash(entry.prev_hash, chain.content_of(entry)) != entry.hash:
            return bad(entry.sequence, entry.id, "modified",
                       f"entry {entry.sequence} was changed after it was recorded")
        checkpoint = wanted.pop(entry.sequence, None)
        if checkpoint is not None and checkpoint.head_hash != entry.hash:
            return bad(entry.sequence, entry.id, "checkpoint_mismatch",
                       f"entry {entry.sequence} is not the one signed at "
                       f"{checkpoint.signed_at}")
        previous = entry.hash
        expected += 1
        checked += 1
    if expected - 1 < last:
        return bad(expected, None, "truncated",
                   f"the log ends at entry {expected - 1} but recorded {last} entries")
    if expected - 1 > last:
        return bad(last + 1, None, "inserted",
                   f"the log recorded {last} entries but entries go on to {expected - 1}")
    if wanted:
        sequence = min(wanted)
        return bad(sequence, None, "truncated",
                   f"a checkpoint signed at {wanted[sequence].signed_at} covers entry "
                   f"{sequence}, which the log no longer reaches")
    if checked and previous != head:
        return bad(expected - 1, None, "head_mismatch",
                   "the chain does not end at the head the log recorded")
    return LogVerification(key, True, checked, previous if checked else head,
                           checkpoints_checked=len(checkpoints))


def verify_logs(session: Session, account_id: str | None = None,
                every: bool = False) -> list[LogVerification]:
    """Verify one account's log (``account_id``), or every log (``every``)."""
    query = select(AuditLog).order_by(AuditLog.key)
    if not every:
        query = query.where(AuditLog.account_id == account_id) if account_id is not None \
            else query.where(AuditLog.account_id.is_(None))
    keys = [log.key for log in session.execute(query).scalars()]
    results = []
    for key in keys:
        audit_log = session.execute(select(AuditLog).where(AuditLog.key == key)).scalar_one()
        results.append(verify_log(session, audit_log))
    return results
