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
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    exists,
    false,
    func,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import array as postgresql_array
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, lazyload

from chancery_audit import lifecycles
from chancery_audit.model import (
    AuditEntry,
    AuditEntryText,
    AuditEntryUnit,
    AuditLog,
    as_utc,
    log_key,
)

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
    lifecycles.learn(session, entry_id=entry.id, message_type=envelope.type,
                     account_id=envelope.account_id, at=entry.at, data=envelope.data,
                     subject_type=entry.subject_type, subject_id=entry.subject_id)
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


#: Free text first looks among the newest RECENT_SCAN entries the reader could see, read
#: newest first through the time indexes; if the word was there but less than a page of
#: it, among as many more as should hold the rest, at most WIDER_SCAN; and only then asks
#: the trigram index about the older rest. See ``_entry_rows``.
RECENT_SCAN = 1_000
WIDER_SCAN = 5_000
#: … and how many more where the newest are read from the text rows' time indexes alone
#: (some microseconds each, where the entries or unit rows cost ten or more)
WIDER_SCAN_OF_TEXT_ROWS = 20_000


@dataclasses.dataclass(frozen=True)
class _Search:
    """A filter made ready to run for one reader.

    ``visible`` is what the reader may see at all; ``filters`` what they asked of the
    entry itself (user, target). Account, time, action and free text are kept apart:
    a unit administrator's entries can be read through ``audit_entry_units``, whose own
    copies of the entry's time and action are what its indexes order by, and free text
    is applied in two steps (``_entry_rows``).
    """

    visible: ColumnElement[bool]
    filters: tuple[ColumnElement[bool], ...]
    account_id: str | None
    start: datetime | None
    end: datetime | None
    action: str | None
    text: str | None
    units: tuple[str, ...] | None    # a unit administrator's units (None: everyone else)

    @property
    def by_unit_rows(self) -> bool:
        """Read unit by unit: a unit administrator narrowing by time and action only."""
        return self.units is not None and not self.filters and self.text is None

    @property
    def by_text_rows(self) -> bool:
        """Free text's newest entries read from the text rows' own time indexes: nothing
        asked of the entry itself, and not a unit administrator."""
        return self.units is None and not self.filters and self.action is None

    @property
    def visible_from_unit_rows(self) -> ColumnElement[bool]:
        """``visible`` for entries reached from the reader's own unit rows: only the
        account is left to check (as ``exists`` again, PostgreSQL hashed all the units'
        rows for every page)."""
        return AuditEntry.account_id == self.account_id


def _visible_to(principal: Principal) -> ColumnElement[bool]:
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
    about_their_units = exists().where(AuditEntryUnit.entry_id == AuditEntry.id,
                                       AuditEntryUnit.unit_id.in_(principal.unit_ids))
    return and_(in_account, about_their_units)


def _action_is(action: str, column: Any) -> ColumnElement[bool]:
    """``column`` (an action) is ``action`` itself or any type under it (whole parts).

    Every message type is registered before anything may publish it (the catalogue only
    grows), so a prefix is turned into the exact types it covers: ``action IN (...)``
    lets PostgreSQL read each type's entries from the (account, action, time) index,
    where ``LIKE 'prefix.%'`` made it walk the log looking for a rare type.
    """
    prefix = action.rstrip(".")
    types = [t for t in contracts.known_types() if t == prefix or t.startswith(prefix + ".")]
    if not types:  # not a type of ours: match it literally, for what it is worth
        return or_(column == prefix, column.startswith(prefix + ".", autoescape=True))
    return column.in_(types)


def _prepare(principal: Principal, wanted: EntryFilter) -> _Search:
    """``wanted`` as ``principal`` may ask it (403 for a role that may not read the log)."""
    visible = _visible_to(principal)
    units: tuple[str, ...] | None = None
    account_id = wanted.account_id
    if principal.role != OPERATOR:
        # another account asked for: nothing. The reader's own account also narrows the
        # queries ``visible`` does not (the unit rows, free text's text rows).
        other_account = account_id is not None and account_id != principal.account_id
        if other_account:
            visible = false()
        account_id = principal.account_id
        if principal.role == "unit_admin" and not other_account:
            # no units: ``visible`` is false already, and the entries' path finds nothing
            units = tuple(sorted(set(principal.unit_ids))) or None
    filters: list[ColumnElement[bool]] = []
    if wanted.user_id is not None:
        filters.append(AuditEntry.user_id == wanted.user_id)
    if wanted.target:
        filters.append(AuditEntry.target == wanted.target if ":" in wanted.target
                       else AuditEntry.subject_type == wanted.target)
    return _Search(visible, tuple(filters), account_id,
                   as_utc(wanted.start) if wanted.start is not None else None,
                   as_utc(wanted.end) if wanted.end is not None else None,
                   wanted.action or None, wanted.text or None, units)


def _matches(text: str) -> ColumnElement[bool]:
    """``text`` in the description, the user's name or the target, any case: in the
    entry's searchable text (``AuditEntryText``), which joins the three."""
    return AuditEntryText.text.icontains(text, autoescape=True)


def _cursor_of(entry: AuditEntry) -> str:
    return encode_cursor({"at": isoformat(as_utc(entry.at)), "id": entry.id})


def _position(cursor: str | None) -> tuple[datetime, str] | None:
    """Where a cursor points: the (time, id) of the last entry of the previous page."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(position["at"])), str(position["id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc


def _older_than(position: tuple[datetime, str], at: Any, entry_id: Any) -> ColumnElement[bool]:
    """Entries after ``position`` in newest-first order.

    ``at <= X`` says the same as the OR, but as a range an index can start from: without
    it a deep page walks the index from the newest entry down to the cursor.
    """
    moment, last_id = position
    return and_(at <= moment, or_(at < moment, and_(at == moment, entry_id < last_id)))


def _between(at: Any, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    """``since <= at < until``, either side open when None."""
    return [*([at >= since] if since is not None else []),
            *([at < until] if until is not None else [])]


def _newest(session: Session, query: Any, wanted: int) -> list[AuditEntry]:
    """The first ``wanted`` entries of ``query``, newest first (a page shows no units:
    they are not loaded)."""
    return list(session.execute(
        query.options(lazyload(AuditEntry.units))
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(wanted)).scalars())


def _entries_in_scope(search: _Search, position: tuple[datetime, str] | None,
                      *columns: Any) -> Any:
    """The entries (or ``columns`` of them) the search may return, but for its free text."""
    query = select(*(columns or (AuditEntry,))).where(search.visible, *search.filters)
    if search.account_id is not None:
        query = query.where(AuditEntry.account_id == search.account_id)
    if search.action:
        query = query.where(_action_is(search.action, AuditEntry.action))
    query = query.where(*_between(AuditEntry.at, search.start, search.end))
    if position is not None:
        query = query.where(_older_than(position, AuditEntry.at, AuditEntry.id))
    return query


def _unit_rows_in_scope(search: _Search, position: tuple[datetime, str] | None,
                        unit_id: str) -> Any:
    """The (entry id, time) of one unit's rows within the search's time, action and
    cursor, newest first: what the (unit, time) and (unit, action, time) indexes hold in
    that order. The account is checked on the entries these lead to (``visible``): here
    PostgreSQL took it for a second, independent filter, guessed a tenth of the rows,
    and sorted all of a unit's rows instead of walking its index."""
    query = select(AuditEntryUnit.entry_id.label("id"), AuditEntryUnit.at).where(
        AuditEntryUnit.unit_id == unit_id, *_between(AuditEntryUnit.at, search.start, search.end))
    if search.action:
        query = query.where(_action_is(search.action, AuditEntryUnit.action))
    if position is not None:
        query = query.where(_older_than(position, AuditEntryUnit.at, AuditEntryUnit.entry_id))
    return query.order_by(AuditEntryUnit.at.desc(), AuditEntryUnit.entry_id.desc())


def _newest_of_units(search: _Search, position: tuple[datetime, str] | None,
                     limit: int) -> Any:
    """The (id, at) of the newest ``limit`` entries about the reader's units.

    Each unit's newest are read from its own index and the lists merged: asked for
    ``unit_id IN (...)`` at once, PostgreSQL read and sorted every row of the units.
    An entry about two of the units is in both lists and kept once.
    """
    assert search.units is not None
    lists = [select(*_unit_rows_in_scope(search, position, unit_id).limit(limit)
                    .subquery().c) for unit_id in search.units]
    merged = (union_all(*lists) if len(lists) > 1 else lists[0]).subquery()
    return (select(merged.c.id, merged.c.at).distinct()
            .order_by(merged.c.at.desc(), merged.c.id.desc()).limit(limit).subquery("newest"))


def _recent(search: _Search, position: tuple[datetime, str] | None, size: int) -> Any:
    """The newest ``size`` entries after ``position`` that free text is looked for in,
    as (id, at, head, complete) rows (see ``AuditEntryText``): for a unit administrator
    from their unit rows; with nothing asked of the entry itself, from the text rows'
    (account, time) or (time) index, which holds the head too, so nothing else is read;
    else from the entries in scope."""
    text = AuditEntryText
    if search.units is not None:
        newest = _newest_of_units(search, position, size)
    elif search.by_text_rows:
        query = select(text.entry_id.label("id"), text.at, text.head, text.complete).where(
            *_between(text.at, search.start, search.end))
        if search.account_id is not None:
            query = query.where(text.account_id == search.account_id)
        if position is not None:
            query = query.where(_older_than(position, text.at, text.entry_id))
        return (query.order_by(text.at.desc(), text.entry_id.desc()).limit(size)
                .subquery("recent"))
    else:
        newest = (_entries_in_scope(search, position, AuditEntry.id, AuditEntry.at)
                  .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                  .limit(size).subquery("newest"))
    # coalesce: the same text, in a form the trigram index cannot serve (see _holds)
    return (select(newest.c.id, newest.c.at, func.coalesce(text.text, "").label("head"),
                   true().label("complete"))
            .join(text, text.entry_id == newest.c.id).subquery("recent"))


def _holds(recent: Any, text: str) -> ColumnElement[bool]:
    """``text`` in a ``_recent`` row: in its head, or (a head cut short) in its whole
    text, read only for such rows. Written on the subquery's columns, which the trigram
    index cannot serve: given the choice, PostgreSQL found every entry holding a common
    word and joined, instead of checking the 1,000."""
    whole = exists().where(AuditEntryText.entry_id == recent.c.id, _matches(text))
    return or_(recent.c.head.icontains(text, autoescape=True),
               and_(recent.c.complete.is_(False), whole))


def _entry_rows(session: Session, search: _Search, position: tuple[datetime, str] | None,
                wanted: int) -> list[AuditEntry]:
    """Up to ``wanted`` entries newest first, read through the entries' indexes.

    Free text is applied in steps. A common word is found among the newest entries at
    once, while the trigram index answers it slowly (its trigrams are in thousands of
    entries, each to fetch and check); a rare one is best found through the index. Left
    to guess which, PostgreSQL read 30,000 entries for one page, or sorted thousands. So:
    look among the newest RECENT_SCAN entries the reader could see (a bounded read); if
    the word was there but less than a page of it, among as many more as that rate says
    should hold the rest (at most WIDER_SCAN); only then ask the index about the older
    ones (``_older_matches``).
    """
    if search.text is None:
        return _newest(session, _entries_in_scope(search, position), wanted)
    visible = search.visible_from_unit_rows if search.units is not None else search.visible
    rows: list[AuditEntry] = []
    size, scanned = RECENT_SCAN, 0
    while True:
        recent = _recent(search, position, size)
        rows += session.execute(
            select(AuditEntry).join(recent, AuditEntry.id == recent.c.id)
            .where(_holds(recent, search.text), visible, *search.filters)
            .options(lazyload(AuditEntry.units))
            .order_by(recent.c.at.desc(), recent.c.id.desc()).limit(wanted - len(rows))
        ).scalars().all()
        if len(rows) >= wanted:
            return rows
        edge = session.execute(
            select(recent.c.at, recent.c.id, func.count().over().label("scanned"))
            .order_by(recent.c.at, recent.c.id).limit(1)).first()
        if edge is None or edge.scanned < size:  # that was all there is
            return rows
        position, scanned = (as_utc(edge.at), edge.id), scanned + size
        if not rows or size != RECENT_SCAN:
            break
        # as many more as should hold the rest at the rate seen so far, twice over
        size = -(-(wanted - len(rows)) * scanned * 2 // len(rows))
        if size > (WIDER_SCAN_OF_TEXT_ROWS if search.by_text_rows else WIDER_SCAN):
            break
    return rows + _older_matches(session, search, position, wanted - len(rows))


def _older_matches(session: Session, search: _Search, edge: tuple[datetime, str],
                   wanted: int) -> list[AuditEntry]:
    """Free text's last step: the newest ``wanted`` matching entries older than ``edge``,
    found through the GIN index of the narrow text rows (account, units and trigrams)
    and checked there for time; only the page found is then read from the entries
    (PostgreSQL, misjudging how many rows hold the word, fetched the entry of every
    candidate before sorting). A filter on the entry itself (user, target, action) is
    checked on the entries, so then every candidate is read from them."""
    text = AuditEntryText
    candidates = select(text.entry_id.label("id"), text.at).where(
        _matches(search.text or ""), *_between(text.at, search.start, search.end),
        _older_than(edge, text.at, text.entry_id))
    if search.account_id is not None:
        candidates = candidates.where(text.account_id == search.account_id)
    if search.units is not None:  # PostgreSQL: from the same index; SQLite: the unit rows
        candidates = candidates.where(
            text.unit_ids.op("&&")(postgresql_array(search.units, type_=String))
            if session.get_bind().dialect.name == "postgresql" else
            exists().where(AuditEntryUnit.entry_id == text.entry_id,
                           AuditEntryUnit.unit_id.in_(search.units)))
    on_entries = [*search.filters,
                  *([_action_is(search.action, AuditEntry.action)] if search.action else [])]
    # every candidate first (MATERIALIZED): else, asked for the newest few, PostgreSQL
    # may walk a time index checking each row for the word, through the whole account
    found: Any = candidates.cte("candidates").prefix_with("MATERIALIZED")
    if not on_entries:
        found = (select(found.c.id, found.c.at)
                 .order_by(found.c.at.desc(), found.c.id.desc()).limit(wanted).subquery("found"))
    return list(session.execute(
        select(AuditEntry).join(found, AuditEntry.id == found.c.id)
        .where(search.visible, *on_entries).options(lazyload(AuditEntry.units))
        .order_by(found.c.at.desc(), found.c.id.desc()).limit(wanted)).scalars())


def _units_rows(session: Session, search: _Search, position: tuple[datetime, str] | None,
                wanted: int) -> list[AuditEntry]:
    """Up to ``wanted`` entries about the reader's units, newest first, read from the
    units' own rows (time, account and action are copied onto ``audit_entry_units``
    for that): walking the account and checking each entry's units would read every
    entry of the account to find the few about one unit."""
    newest = _newest_of_units(search, position, wanted)
    return list(session.execute(
        select(AuditEntry).join(newest, AuditEntry.id == newest.c.id)
        .where(search.visible_from_unit_rows)
        .options(lazyload(AuditEntry.units))
        .order_by(newest.c.at.desc(), newest.c.id.desc())).scalars())


def _page(session: Session, search: _Search, cursor: str | None, limit: int) -> Page:
    """One page newest first."""
    read = _units_rows if search.by_unit_rows else _entry_rows
    rows = read(session, search, _position(cursor), limit + 1)
    entries = rows[:limit]
    return Page(entries, _cursor_of(entries[-1]) if len(rows) > limit and entries else None)


def search(uow: UnitOfWork, principal: Principal, wanted: EntryFilter, *, limit: int,
           cursor: str | None = None) -> Page:
    """One page of the entries ``principal`` may read that match ``wanted``, newest first."""
    return _page(uow.session, _prepare(principal, wanted), cursor, limit)


def export(uow_factory: Callable[[], UnitOfWork], principal: Principal, wanted: EntryFilter,
           *, batch_size: int | None = None) -> Iterator[AuditEntry]:
    """Every matching entry, newest first, read in short transactions of a batch each.

    A download may be slow; holding one transaction open for all of it would hold
    SQLite's lock (every transaction there is ``BEGIN IMMEDIATE``) for as long.
    Visibility is checked before the first entry is read, so a caller who may not read
    the log gets a 403 rather than an empty file.
    """
    prepared = _prepare(principal, wanted)
    size = batch_size or EXPORT_BATCH_SIZE

    def entries() -> Iterator[AuditEntry]:
        cursor: str | None = None
        while True:
            with uow_factory() as uow:
                page = _page(uow.session, prepared, cursor, size)
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
