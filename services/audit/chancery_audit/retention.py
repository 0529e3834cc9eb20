"""Retention: entries are kept at least two years, and past that as long as BR 5.4.3
says; older ones go only when an operator says so (``chancery-audit purge --before
DATE``).

How long an entry is kept depends on what it concerns (``lifecycles.py``):

- an entry about a subscriber certificate: until two years after the certificate
  expired or was revoked;
- an entry about an order: until two years after every certificate issued for that
  order expired or was revoked (a reissue is one more certificate of the order). An
  order with no certificate yet is kept as long as it has none; an order that ended
  without one (rejected, cancelled, failed) counts from the day it ended;
- an entry about a domain (``orders.domain.*``: its validations): until two years after
  every certificate of the account for that name or a name under it ended (any of them
  may have relied on the validation); with no such certificate, its own time;
- an entry about a CA (``ca_signer.issuer.*``, its CRLs, profiles, OCSP responders):
  until two years after the CA certificate's expiry (a revoked CA's key may live on
  until it is destroyed, which no message announces, so revocation does not shorten it);
- any other entry: two years after its own time.

An entry naming a certificate or a CA audit never saw issued or created is kept: its
end is unknown. A purge with ``--before D`` removes an entry only when it was recorded
before D and everything it concerns ended before D (D is at least two years ago).

A purge removes, per log, the longest run of oldest entries that may all go — always a
prefix of the chain, so what is left still links up: the log remembers the first entry
it kept (``first_sequence``) and the hash that entry follows (``anchor_hash``). An old
entry that may go but comes after one that must stay is kept too (the chain cannot skip
it). The purge records its own entry at the end of each log it shortened (who, when,
how many, up to which entry, and how many older entries it kept and why) and signs a
checkpoint, so the shortened chain verifies and the purge itself is in the log.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta

from chancery_shared.messaging.envelope import Context
from chancery_shared.web.problems import InvalidField
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from chancery_audit.checkpoints import CheckpointSigner, sign_checkpoint
from chancery_audit.handlers import record_entry
from chancery_audit.model import (
    CERTIFICATE,
    DOMAIN,
    ISSUER,
    ORDER,
    AuditCertificate,
    AuditCertificateName,
    AuditEntry,
    AuditEntryConcern,
    AuditEntryText,
    AuditEntryUnit,
    AuditIssuer,
    AuditLog,
    AuditOrder,
    as_utc,
)

#: Nothing younger than this may be purged, and nothing about a certificate (or a CA)
#: that stopped being valid less than this ago (BR 5.4.3).
MINIMUM_RETENTION = timedelta(days=730)
#: Entries examined per query while looking for how far a log may be purged.
BATCH = 500

#: Why an entry recorded before the date was kept, most telling first (an entry held for
#: several reasons counts once, under the first).
KEPT_REASONS: dict[str, str] = {
    "certificate": "about a certificate still valid, or that ended less than two years "
                   "before the date",
    "issuer": "about a CA certificate that expires less than two years before the date, "
              "or later",
    "domain": "about a domain whose validation a certificate still valid, or that ended "
              "less than two years before the date, may have relied on",
    "order_ended": "about an order that ended without a certificate less than two years "
                   "before the date",
    "order_open": "about an order with no certificate yet",
    "unknown": "naming a certificate or CA audit never saw issued or created",
    "chain": "after a kept entry in the chain (only a prefix of a log can go)",
}

__all__ = ["KEPT_REASONS", "MINIMUM_RETENTION", "Purged", "purge"]


@dataclasses.dataclass(frozen=True)
class Purged:
    """What a purge did to one log: ``entries`` removed, through position
    ``through_sequence``, and how many entries recorded before the date it ``kept``, by
    reason (``KEPT_REASONS``)."""

    log_key: str
    entries: int
    through_sequence: int
    kept: Mapping[str, int] = dataclasses.field(default_factory=dict)

    @property
    def kept_total(self) -> int:
        return sum(self.kept.values())


@dataclasses.dataclass(frozen=True)
class _Lives:
    """When the things some entries concern stop (None: not known to audit)."""

    certificates: dict[str, datetime | None]          # serial → end
    of_orders: dict[str, list[datetime | None]]       # order → its certificates' ends
    orders_ended: dict[str, datetime]                 # order → ended without a certificate
    issuers: dict[str, datetime]                      # CA → its certificate's not_after
    of_domains: dict[str, list[datetime | None]]      # name → ends of certificates under it

    @classmethod
    def of(cls, session: Session, concerns: set[tuple[str, str]],
           account_id: str | None) -> _Lives:
        serials = {ref for kind, ref in concerns if kind == CERTIFICATE}
        orders = {ref for kind, ref in concerns if kind == ORDER}
        issuers = {ref for kind, ref in concerns if kind == ISSUER}
        certificates: dict[str, datetime | None] = {}
        of_orders: dict[str, list[datetime | None]] = defaultdict(list)
        if serials or orders:
            for certificate in session.execute(select(AuditCertificate).where(or_(
                    AuditCertificate.serial.in_(serials),
                    AuditCertificate.order_id.in_(orders)))).scalars():
                certificates[certificate.serial] = certificate.ends_at
                if certificate.order_id is not None:
                    of_orders[certificate.order_id].append(certificate.ends_at)
        ended = dict(session.execute(select(AuditOrder.order_id, AuditOrder.ended_at)
                                     .where(AuditOrder.order_id.in_(orders))).all()) \
            if orders else {}
        not_after = dict(session.execute(select(AuditIssuer.issuer_id, AuditIssuer.not_after)
                                         .where(AuditIssuer.issuer_id.in_(issuers))).all()) \
            if issuers else {}
        of_domains: dict[str, list[datetime | None]] = {}
        for name in sorted({ref for kind, ref in concerns if kind == DOMAIN}):
            of_domains[name] = [c.ends_at for c in session.execute(
                select(AuditCertificate).distinct()
                .join(AuditCertificateName, AuditCertificateName.serial == AuditCertificate.serial)
                .where(AuditCertificate.account_id == account_id,
                       or_(AuditCertificateName.name == name,
                           AuditCertificateName.name.endswith("." + name, autoescape=True))))
                .scalars()]
        return cls(certificates, dict(of_orders), {k: as_utc(v) for k, v in ended.items()},
                   {k: as_utc(v) for k, v in not_after.items()}, of_domains)

    def why_kept(self, concerns: set[tuple[str, str]], before: datetime) -> str | None:
        """Why an entry recorded before ``before`` about ``concerns`` must stay; None
        when everything it concerns ended before ``before``."""
        reasons: set[str] = set()

        def ends(end: datetime | None, reason: str) -> None:
            if end is None:
                reasons.add("unknown")
            elif end >= before:
                reasons.add(reason)

        for kind, ref in concerns:
            if kind == CERTIFICATE:
                ends(self.certificates.get(ref), "certificate")
            elif kind == DOMAIN:
                for end in self.of_domains.get(ref, ()):
                    ends(end, "domain")
            elif kind == ISSUER:
                ends(self.issuers.get(ref), "issuer")
            elif kind == ORDER:
                if ref in self.of_orders:
                    for end in self.of_orders[ref]:
                        ends(end, "certificate")
                elif ref in self.orders_ended:
                    ends(self.orders_ended[ref], "order_ended")
                else:
                    reasons.add("order_open")
        return next((reason for reason in KEPT_REASONS if reason in reasons), None)


def _survey(session: Session, audit_log: AuditLog, before: datetime) -> tuple[int, Counter]:
    """How far ``audit_log`` may be purged (the last position of the longest prefix of
    entries that may all go), and the entries recorded before ``before`` it keeps, by
    reason. Entries can arrive late, so time order is not quite log order: the first
    entry recorded on or after ``before`` ends the prefix too."""
    key = audit_log.key
    first_young = session.execute(
        select(func.min(AuditEntry.sequence)).where(AuditEntry.log_key == key,
                                                    AuditEntry.at >= before)).scalar()
    through = (first_young - 1) if first_young is not None else audit_log.last_sequence
    kept: Counter = Counter()
    after = (audit_log.first_sequence or 1) - 1
    while True:
        rows = session.execute(
            select(AuditEntry.id, AuditEntry.sequence)
            .where(AuditEntry.log_key == key, AuditEntry.sequence > after,
                   AuditEntry.at < before)
            .order_by(AuditEntry.sequence).limit(BATCH)).all()
        if not rows:
            return through, kept
        concerns: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for entry_id, kind, ref in session.execute(
                select(AuditEntryConcern.entry_id, AuditEntryConcern.kind,
                       AuditEntryConcern.ref)
                .where(AuditEntryConcern.entry_id.in_([r.id for r in rows]))):
            concerns[entry_id].add((kind, ref))
        lives = _Lives.of(session, set().union(*concerns.values()), audit_log.account_id)
        for entry_id, sequence in rows:
            reason = lives.why_kept(concerns.get(entry_id, set()), before)
            if reason is None and sequence > through:
                reason = "chain"
            if reason is not None:
                kept[reason] += 1
                through = min(through, sequence - 1)
        after = rows[-1].sequence


def _kept_phrase(kept: Mapping[str, int]) -> str:
    total = sum(kept.values())
    parts = ", ".join(f"{kept[reason]} {KEPT_REASONS[reason]}" for reason in KEPT_REASONS
                      if kept.get(reason))
    return f"; kept {total} older: {parts}" if total else ""


def purge(uow_factory, signer: CheckpointSigner, context: Context, *, before: datetime,
          now: datetime) -> list[Purged]:
    """Delete each log's entries recorded before ``before`` (at least two years ago)
    whose certificates, orders and CAs all ended before it too, as far as the chain
    allows; one transaction per log. Returns, per log, what was removed and what older
    entries were kept (a log with neither is left out)."""
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
            through, kept = _survey(uow.session, audit_log, before)
            first = audit_log.first_sequence or 1
            if through < first:
                if kept:
                    done.append(Purged(key, 0, first - 1, dict(kept)))
                continue
            anchor = uow.session.execute(select(AuditEntry.hash).where(
                AuditEntry.log_key == key, AuditEntry.sequence == through)).scalar_one()
            doomed = select(AuditEntry.id).where(AuditEntry.log_key == key,
                                                 AuditEntry.sequence <= through)
            for dependent in (AuditEntryUnit, AuditEntryText, AuditEntryConcern):
                uow.session.execute(delete(dependent).where(dependent.entry_id.in_(doomed)))
            removed = uow.session.execute(delete(AuditEntry).where(
                AuditEntry.log_key == key, AuditEntry.sequence <= through)).rowcount
            audit_log.first_sequence, audit_log.anchor_hash = through + 1, anchor
            envelope = uow.event(
                "audit.log.purged", context.with_account(audit_log.account_id),
                subject=("audit_log", key),
                summary=f"{context.actor.user_name or context.actor.system} purged "
                        f"{removed} audit entries recorded before {before:%Y-%m-%d} "
                        f"(entries {first} to {through}){_kept_phrase(kept)}",
                data={"log_key": key, "before": before.isoformat().replace("+00:00", "Z"),
                      "entries": removed, "first_sequence": first,
                      "through_sequence": through})
            record_entry(uow, envelope)  # the purge is an entry of the log it shortened
            uow.session.flush()
            sign_checkpoint(uow, signer, audit_log, now)
            uow.commit()
            done.append(Purged(key, removed, through, dict(kept)))
    return done
