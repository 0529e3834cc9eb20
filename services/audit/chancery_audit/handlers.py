"""audit's service layer: recording an entry per message, and searching the log.

Recording is the audit trail itself, so it emits no event (an event per entry would be
audited, which would emit an event, forever). It runs inside the consumer's unit of
work and leaves the commit to the consumer, so the entry and the inbox row are written
in one transaction.

Searching is keyset-paginated on ``(at, id)``, newest first: a page never repeats or
skips an entry however many are recorded while someone reads, which offsets cannot
promise on a log that grows all the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from chancery_shared.auth.tokens import OPERATOR, Principal
from chancery_shared.messaging import contracts
from chancery_shared.messaging.envelope import Envelope, isoformat, utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.pagination import decode_cursor, encode_cursor
from chancery_shared.web.problems import Forbidden, InvalidField, NotFound
from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from chancery_audit.model import AuditEntry, AuditEntryUnit, AuditLog, as_utc, log_key

READ_PERMISSION = "read_audit_log"
READERS = ("admin", "unit_admin", OPERATOR)
EXPORT_BATCH_SIZE = 500

# --- recording -----------------------------------------------------------------------


def units_named_in(data: dict[str, Any]) -> set[str]:
    """The business units a payload names: ``unit_id``, ``unit_ids``, an edited unit."""
    units: set[str] = set()
    if isinstance(data.get("unit_id"), str) and data["unit_id"]:
        units.add(data["unit_id"])
    if isinstance(data.get("unit_ids"), list):
        units.update(u for u in data["unit_ids"] if isinstance(u, str) and u)
    changes = data.get("changes")
    if isinstance(changes, dict):
        if isinstance(changes.get("unit_id"), list):  # [old, new]
            units.update(u for u in changes["unit_id"] if isinstance(u, str) and u)
        if isinstance(changes.get("unit_ids"), list):  # [old list, new list]
            for side in changes["unit_ids"]:
                if isinstance(side, list):
                    units.update(u for u in side if isinstance(u, str) and u)
    return units


def _units_of_flow(session: Session, account_id: str | None, correlation_id: str) -> set[str]:
    """Units already recorded for this business flow (an order's life) in this account.

    ``ledger.funds.reserved`` names only the order, yet it concerns the order's unit:
    the flow's earlier messages (``orders.order.submitted``, ``.approved``) said which.
    """
    if account_id is None:
        return set()
    rows = session.execute(
        select(AuditEntryUnit.unit_id).distinct()
        .join(AuditEntry, AuditEntry.id == AuditEntryUnit.entry_id)
        .where(AuditEntry.account_id == account_id, AuditEntry.correlation_id == correlation_id)
    ).scalars()
    return set(rows)


def _log_for(session: Session, account_id: str | None) -> AuditLog:
    """The log to append to, locked until commit so positions are never shared.

    An account's first entry creates its log; when two consumers do that at once, the
    second waits for the first instead of failing on the duplicate key.
    """
    key = log_key(account_id)
    locked = select(AuditLog).where(AuditLog.key == key).with_for_update()
    log = session.execute(locked).scalar_one_or_none()
    if log is None:
        dialect_insert = (postgresql_insert if session.get_bind().dialect.name == "postgresql"
                          else sqlite_insert)
        session.execute(dialect_insert(AuditLog).values(
            key=key, account_id=account_id, last_sequence=0, created_at=utcnow(),
        ).on_conflict_do_nothing(index_elements=["key"]))
        log = session.execute(locked).scalar_one()
    return log


#: The audit service's own messages that are not entries: a checkpoint is a statement
#: about the log (kept in audit_checkpoints), and recording it would move the head it
#: just signed, calling for another checkpoint, forever.
NOT_RECORDED = frozenset({"audit.checkpoint.signed"})


def record_entry(uow: UnitOfWork, envelope: Envelope) -> AuditEntry | None:
    """Append the entry of ``envelope`` to its log; None when it is already there (or
    it is one of the audit service's checkpoints).

    The inbox already stops a redelivery; the check on ``event_id`` (unique in the
    table too) also stops the same message arriving through another path, such as a
    dead letter replayed after it had been recorded.
    """
    session = uow.session
    if envelope.type in NOT_RECORDED and envelope.source == "audit":
        return None
    if session.execute(select(AuditEntry.id)
                       .where(AuditEntry.event_id == envelope.event_id)).first():
        return None
    units = units_named_in(envelope.data) or _units_of_flow(
        session, envelope.account_id, envelope.correlation_id)
    entry = AuditEntry.from_envelope(envelope, log=_log_for(session, envelope.account_id),
                                     unit_ids=units)
    session.add(entry)
    session.flush()
    return entry


# --- searching -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EntryFilter:
    """What a reader asks for; every criterion given must hold."""

    user_id: str | None = None
    start: datetime | None = None      # inclusive
    end: datetime | None = None        # exclusive
    action: str | None = None          # whole leading parts: "orders.order" is every order event
    text: str | None = None            # in the description, the user's name or the target
    target: str | None = None          # "order:<id>", or a subject type alone ("order")
    account_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Page:
    entries: list[AuditEntry]
    next_cursor: str | None


def _visible_to(principal: Principal, with_units: bool = True) -> ColumnElement[bool]:
    """The entries ``principal`` may read: roles.md's 'read the audit log' row."""
    if principal.role == OPERATOR:
        return true()
    if principal.role not in READERS or principal.account_id is None:
        raise Forbidden(f"your role ({principal.role}) lacks the permission '{READ_PERMISSION}'",
                        missing_permission=READ_PERMISSION)
    in_account = AuditEntry.account_id == principal.account_id
    if principal.role == "admin":
        return in_account
    if not principal.unit_ids:
        return false()
    if not with_units:
        return in_account  # the caller reads through the units' own index (see _page)
    about_their_units = exists().where(AuditEntryUnit.entry_id == AuditEntry.id,
                                       AuditEntryUnit.unit_id.in_(principal.unit_ids))
    return and_(in_account, about_their_units)


def _units_read_by(principal: Principal) -> tuple[str, ...] | None:
    """A unit administrator's units: their pages are read unit by unit (None: others)."""
    if principal.role == "unit_admin" and principal.unit_ids:
        return tuple(sorted(set(principal.unit_ids)))
    return None


def _action_is(action: str) -> ColumnElement[bool]:
    """The action itself or any type under it (whole leading parts).

    Every message type is registered before anything may publish it (the catalogue only
    grows), so a prefix is turned into the exact types it covers: ``action IN (...)``
    lets PostgreSQL read each type's entries from the (account, action, time) index,
    where ``LIKE 'prefix.%'`` made it walk the log looking for a rare type.
    """
    prefix = action.rstrip(".")
    types = [t for t in contracts.known_types() if t == prefix or t.startswith(prefix + ".")]
    if not types:  # not a type of ours: match it literally, for what it is worth
        return or_(AuditEntry.action == prefix,
                   AuditEntry.action.startswith(prefix + ".", autoescape=True))
    return AuditEntry.action.in_(types)


def _conditions(principal: Principal, wanted: EntryFilter) -> list[ColumnElement[bool]]:
    """Every condition but a unit administrator's units (``_page`` applies those)."""
    conditions = [_visible_to(principal, with_units=_units_read_by(principal) is None)]
    if wanted.account_id is not None:
        conditions.append(AuditEntry.account_id == wanted.account_id)
    if wanted.user_id is not None:
        conditions.append(AuditEntry.user_id == wanted.user_id)
    if wanted.start is not None:
        conditions.append(AuditEntry.at >= as_utc(wanted.start))
    if wanted.end is not None:
        conditions.append(AuditEntry.at < as_utc(wanted.end))
    if wanted.action:
        conditions.append(_action_is(wanted.action))
    if wanted.target:
        conditions.append(AuditEntry.target == wanted.target if ":" in wanted.target
                          else AuditEntry.subject_type == wanted.target)
    if wanted.text:
        conditions.append(or_(
            AuditEntry.description.icontains(wanted.text, autoescape=True),
            AuditEntry.user_name.icontains(wanted.text, autoescape=True),
            AuditEntry.target.icontains(wanted.text, autoescape=True),
        ))
    return conditions


def _cursor_of(entry: AuditEntry) -> str:
    return encode_cursor({"at": isoformat(as_utc(entry.at)), "id": entry.id})


def _after(cursor: str | None) -> ColumnElement[bool] | None:
    """Entries older than the cursor's position in newest-first order."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    try:
        at = as_utc(datetime.fromisoformat(position["at"]))
        entry_id = str(position["id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
    # ``at <= X`` says the same as the OR below, but as a range an index can start from:
    # without it a deep page walks the index from the newest entry down to the cursor
    return and_(AuditEntry.at <= at,
                or_(AuditEntry.at < at, and_(AuditEntry.at == at, AuditEntry.id < entry_id)))


def _page(session: Session, conditions: list[ColumnElement[bool]], after: str | None,
          limit: int, units: tuple[str, ...] | None = None) -> Page:
    """One page newest first; with ``units``, only entries about those units.

    A unit administrator's entries are read from each unit's own time-ordered index
    (``audit_entry_units`` keeps the entry's time), up to one page per unit, then
    merged: walking the whole account and checking each entry's units would read every
    entry of the account to find the few about one unit.
    """
    if units is not None:
        return _units_page(session, conditions, after, limit, units)
    position = _after(after)
    query = select(AuditEntry).where(*conditions)
    if position is not None:
        query = query.where(position)
    rows = list(session.execute(
        query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit + 1)
    ).scalars())
    more = len(rows) > limit
    entries = rows[:limit]
    return Page(entries, _cursor_of(entries[-1]) if more and entries else None)


def _units_page(session: Session, conditions: list[ColumnElement[bool]], after: str | None,
                limit: int, units: tuple[str, ...]) -> Page:
    position = decode_cursor(after) if after else None
    _after(after)  # refuses a cursor that is not ours
    found: dict[str, AuditEntry] = {}
    for unit_id in units:
        query = (select(AuditEntry)
                 .join(AuditEntryUnit, AuditEntryUnit.entry_id == AuditEntry.id)
                 .where(AuditEntryUnit.unit_id == unit_id, *conditions))
        if position is not None:
            at, entry_id = as_utc(datetime.fromisoformat(position["at"])), str(position["id"])
            query = query.where(AuditEntryUnit.at <= at, or_(
                AuditEntryUnit.at < at,
                and_(AuditEntryUnit.at == at, AuditEntryUnit.entry_id < entry_id)))
        for entry in session.execute(query.order_by(AuditEntryUnit.at.desc(),
                                                    AuditEntryUnit.entry_id.desc())
                                     .limit(limit + 1)).scalars():
            found[entry.id] = entry
    # the newest ``limit`` of all units are among each unit's newest ``limit + 1``; an
    # entry about two of the units arrives twice and is kept once
    rows = sorted(found.values(), key=lambda e: (as_utc(e.at), e.id), reverse=True)
    entries = rows[:limit]
    return Page(entries, _cursor_of(entries[-1]) if len(rows) > limit and entries else None)


def search(uow: UnitOfWork, principal: Principal, wanted: EntryFilter, *, limit: int,
           cursor: str | None = None) -> Page:
    """One page of the entries ``principal`` may read that match ``wanted``, newest first."""
    return _page(uow.session, _conditions(principal, wanted), cursor, limit,
                 _units_read_by(principal))


def export(uow_factory: Callable[[], UnitOfWork], principal: Principal, wanted: EntryFilter,
           *, batch_size: int | None = None) -> Iterator[AuditEntry]:
    """Every matching entry, newest first, read in short transactions of a batch each.

    A download may be slow; holding one transaction open for all of it would hold
    SQLite's lock (every transaction there is ``BEGIN IMMEDIATE``) for as long.
    Visibility is checked before the first entry is read, so a caller who may not read
    the log gets a 403 rather than an empty file.
    """
    conditions = _conditions(principal, wanted)
    units = _units_read_by(principal)
    size = batch_size or EXPORT_BATCH_SIZE

    def entries() -> Iterator[AuditEntry]:
        cursor: str | None = None
        while True:
            with uow_factory() as uow:
                page = _page(uow.session, conditions, cursor, size, units)
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    return entries()


def get_entry(uow: UnitOfWork, principal: Principal, entry_id: str) -> AuditEntry:
    """One entry with its whole message; 404 when missing or not the caller's to read."""
    entry = uow.session.execute(
        select(AuditEntry).where(AuditEntry.id == entry_id, _visible_to(principal))
    ).scalar_one_or_none()
    if entry is None:
        raise NotFound("no such audit entry")
    return entry


# --- verifying -----------------------------------------------------------------------


def verify(uow: UnitOfWork, principal: Principal, account_id: str | None) -> dict[str, Any]:
    """The caller's account log checked (the operator: every log, or ``account_id``'s)."""
    from chancery_audit.verify import verify_logs

    if principal.role == OPERATOR:
        results = verify_logs(uow.session, account_id, every=account_id is None)
    else:
        results = verify_logs(uow.session, principal.account_id)
    bad = next((r for r in results if not r.ok), None)
    head = (bad.head_hash if bad else results[0].head_hash if len(results) == 1 else None)
    return {"ok": bad is None, "entries_checked": sum(r.entries_checked for r in results),
            "head_hash": head, "first_bad": bad.first_bad.as_dict() if bad else None,
            "logs": [{**dataclasses.asdict(r),
                      "first_bad": r.first_bad.as_dict() if r.first_bad else None}
                     for r in results]}
