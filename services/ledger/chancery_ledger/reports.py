"""Finance reports: what an account spent over a period, and every movement in it.

**Spend** is the net change of the account's ``revenue`` journal account (see
:mod:`chancery_ledger.model`) over the period: a *capture* (a certificate was issued)
adds the order's price at the time of the capture, and a *refund of a captured order*
subtracts it at the time of the refund, so a refund is negative in the month it happens,
not in the month of the capture. Reservations, releases, deposits and refunds of a price
that was never captured move no revenue and are no spend. ``orders`` counts the orders
captured in the period (a refund does not uncount one; free orders post no transfer and
are not counted). Unit and product are the order's, as the ledger's reservation recorded
them when the order was approved.

**Periods** are half-open, ``[from, to)``, in UTC. A date (``2026-03-01``) means the
start of that day for ``from`` and the whole day for ``to`` (so ``from=2026-03-01&
to=2026-03-31`` is all of March); an RFC 3339 time (with an offset) means that instant.
A period is at most :data:`MAX_PERIOD_DAYS` days long.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from chancery_shared.messaging.envelope import isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.csv_export import safe_cells, stream
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema
from sqlalchemy import and_, case, func, or_, select

from chancery_ledger.model import (
    CAPTURE,
    CURRENCY,
    CUSTOMER_AVAILABLE,
    CUSTOMER_HELD,
    REVENUE,
    LedgerAccount,
    Posting,
    Reservation,
    Transfer,
)

MAX_PERIOD_DAYS = 366
GROUPINGS = ("unit", "product", "month")
BATCH_SIZE = 500  # transfers read per short transaction while streaming a listing
NO_UNIT, NO_PRODUCT = "No business unit", "Unknown product"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def as_json(self) -> dict[str, str]:
        return {"from": isoformat(self.start), "to": isoformat(self.end)}


# --- parameters --------------------------------------------------------------------------


class DayOrTime(fields.Field):
    """An ISO date (``2026-03-01``) or an RFC 3339 time with an offset."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> date | datetime:
        if not isinstance(value, str):
            raise ValidationError("must be a date (YYYY-MM-DD) or an RFC 3339 time")
        if _DATE.match(value):
            try:
                return date.fromisoformat(value)
            except ValueError as exc:
                raise ValidationError("is not a real date") from exc
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError("must be a date (YYYY-MM-DD) or an RFC 3339 time") from exc
        if "T" not in value.upper() or moment.tzinfo is None:
            raise ValidationError("an RFC 3339 time needs a 'T' and an offset, e.g. "
                                  "2026-03-01T00:00:00Z")
        return moment.astimezone(UTC)


def _start_of(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time.min, tzinfo=UTC)


def _end_of(value: date | datetime) -> datetime:
    """The exclusive end: a date includes its whole day."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value + timedelta(days=1), time.min, tzinfo=UTC)


def period_of(start: date | datetime | None, end: date | datetime | None,
              now: datetime | None = None) -> Period:
    """The period asked for: ``to`` defaults to today (whole), ``from`` to the first of
    ``to``'s month. Raises :class:`ValidationError` naming ``to`` or ``from``."""
    now = now or datetime.now(UTC)
    end_at = _end_of(end if end is not None else now.date())
    if start is None:
        last_day = (end_at - timedelta(microseconds=1)).date()
        start_at = datetime(last_day.year, last_day.month, 1, tzinfo=UTC)
    else:
        start_at = _start_of(start)
    if end is not None and _start_of(end) < start_at:
        raise ValidationError("must not be before 'from'", "to")
    if end_at - start_at > timedelta(days=MAX_PERIOD_DAYS):
        raise ValidationError(f"must be at most {MAX_PERIOD_DAYS} days after 'from'", "to")
    return Period(start_at, end_at)


class PeriodArgs(Schema):
    from_ = DayOrTime(data_key="from", metadata={
        "description": "YYYY-MM-DD (start of that day, UTC) or an RFC 3339 time; "
                       "default: the first day of `to`'s month",
        "type": "string", "example": "2026-03-01"})
    to = DayOrTime(metadata={
        "description": "YYYY-MM-DD (that whole day included) or an RFC 3339 time "
                       "(exclusive); default: today. At most 366 days after `from`",
        "type": "string", "example": "2026-03-31"})

    @validates_schema
    def _a_real_period(self, data: dict[str, Any], **_kw: Any) -> None:
        period_of(data.get("from_"), data.get("to"))

    @post_load
    def _to_period(self, data: dict[str, Any], **_kw: Any) -> dict[str, Any]:
        data["period"] = period_of(data.pop("from_", None), data.pop("to", None))
        return data


class SpendArgs(PeriodArgs):
    group_by = fields.String(load_default="month", validate=validate.OneOf(GROUPINGS),
                             metadata={"description": "unit, product or month"})


class SpendRowSchema(Schema):
    key = fields.String(allow_none=True, metadata={
        "description": "the unit id, product code or month (YYYY-MM); null: none recorded"})
    label = fields.String(metadata={"description": "a human name, when the ledger has one"})
    orders = fields.Integer(metadata={"description": "orders captured in the period"})
    spent_cents = fields.Integer(metadata={"description": "captures minus refunds"})


class SpendReportSchema(Schema):
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    group_by = fields.String()
    currency = fields.String()
    rows = fields.List(fields.Nested(SpendRowSchema))
    total_cents = fields.Integer()


# --- spend -------------------------------------------------------------------------------


def _months(period: Period) -> list[Period]:
    """The calendar months (UTC) overlapping ``period``, clipped to it."""
    months, cursor = [], datetime(period.start.year, period.start.month, 1, tzinfo=UTC)
    while cursor < period.end or (not months and cursor <= period.end):
        following = datetime(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1,
                             tzinfo=UTC)
        months.append(Period(max(cursor, period.start), min(following, period.end)))
        cursor = following
    return months


def _revenue_moves(customer_account_id: str, period: Period) -> Any:
    """Revenue postings of the account in ``period``, joined to the order's reservation."""
    return (select(Transfer.order_id, Transfer.kind, Posting.amount_cents,
                   Reservation.unit_id, Reservation.product)
            .join(Posting, Posting.transfer_id == Transfer.id)
            .join(LedgerAccount, and_(LedgerAccount.id == Posting.ledger_account_id,
                                      LedgerAccount.kind == REVENUE))
            .outerjoin(Reservation, Reservation.id == Transfer.reservation_id)
            .where(Transfer.customer_account_id == customer_account_id,
                   Transfer.created_at >= period.start, Transfer.created_at < period.end))


def _totals(uow: UnitOfWork, customer_account_id: str, period: Period,
            key: Any | None) -> list[tuple[Any, int, int]]:
    """``(key, orders, spent_cents)`` per key (one row with key ``None`` when ungrouped)."""
    moves = _revenue_moves(customer_account_id, period).subquery()
    captured = func.count(func.distinct(case((moves.c.kind == CAPTURE, moves.c.order_id))))
    spent = func.coalesce(func.sum(moves.c.amount_cents), 0)
    if key is None:
        orders, cents = uow.session.execute(select(captured, spent)).one()
        return [(None, int(orders), int(cents))]
    column = moves.c[key]
    rows = uow.session.execute(select(column, captured, spent).group_by(column)).all()
    return [(k, int(orders), int(cents)) for k, orders, cents in rows]


def spend(uow: UnitOfWork, customer_account_id: str, period: Period, group_by: str
          ) -> dict[str, Any]:
    """The spend report: rows by unit or product (largest spend first, then key), or one
    row per calendar month of the period (every month, even without spend, in order)."""
    rows: list[dict[str, Any]] = []
    if group_by == "month":
        for month in _months(period):
            ((_, orders, cents),) = _totals(uow, customer_account_id, month, None)
            rows.append({"key": f"{month.start:%Y-%m}", "label": f"{month.start:%B %Y}",
                         "orders": orders, "spent_cents": cents})
    else:
        column, missing = ("unit_id", NO_UNIT) if group_by == "unit" else ("product", NO_PRODUCT)
        for key, orders, cents in _totals(uow, customer_account_id, period, column):
            row: dict[str, Any] = {"key": key, "orders": orders, "spent_cents": cents}
            if key is None:
                row["label"] = missing
            rows.append(row)
        rows.sort(key=lambda r: (-r["spent_cents"], r["key"] is None, r["key"] or ""))
    return {**period.as_json(), "group_by": group_by, "currency": CURRENCY, "rows": rows,
            "total_cents": sum(r["spent_cents"] for r in rows)}


SPEND_COLUMNS = ("key", "label", "orders", "spent_cents", "spent_usd")


def _usd_decimal(cents: int) -> str:
    """``-123456`` -> ``-1234.56``: a number a spreadsheet sums (never used for arithmetic)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def spend_csv(report: dict[str, Any]) -> Iterator[str]:
    """The spend report's rows as CSV after a header; every cell spreadsheet-safe."""
    def row(item: dict[str, Any]) -> list[str]:
        return safe_cells([item["key"], item.get("label"), item["orders"],
                           item["spent_cents"], _usd_decimal(item["spent_cents"])])
    return stream(SPEND_COLUMNS, report["rows"], row)


# --- transactions ------------------------------------------------------------------------


TRANSACTION_COLUMNS = ("occurred_at", "id", "type", "amount_cents", "available_change_cents",
                       "reserved_change_cents", "available_after_cents",
                       "reserved_after_cents", "order_id", "deposit_id", "unit_id",
                       "description")


def transaction_line(transfer: Transfer) -> dict[str, Any]:
    """One movement as a statement line (the shape of ``GET /transactions`` items)."""
    return {"occurred_at": isoformat(transfer.created_at), "id": transfer.id,
            "type": transfer.kind, "amount_cents": transfer.amount_cents,
            "available_change_cents": transfer.effect_on(CUSTOMER_AVAILABLE),
            "reserved_change_cents": transfer.effect_on(CUSTOMER_HELD),
            "available_after_cents": transfer.available_after_cents,
            "reserved_after_cents": transfer.reserved_after_cents,
            "order_id": transfer.order_id, "deposit_id": transfer.deposit_id,
            # the unit whose division funds moved (recorded once unit funds exist)
            "unit_id": getattr(transfer, "unit_id", None),
            "description": transfer.description}


def transaction_lines(uow_factory: Callable[[], UnitOfWork], customer_account_id: str,
                      period: Period, *, batch_size: int = BATCH_SIZE
                      ) -> Iterator[dict[str, Any]]:
    """Every transfer of the account in ``period``, oldest first, as statement lines.

    Every transfer moves the customer's available or held balance, so this is the whole
    statement. Read in short transactions of ``batch_size`` (keyset on time and id), so
    a long download never holds SQLite's write lock.
    """
    after: tuple[datetime, str] | None = None
    while True:
        query = select(Transfer).where(Transfer.customer_account_id == customer_account_id,
                                       Transfer.created_at >= period.start,
                                       Transfer.created_at < period.end)
        if after is not None:
            at, last_id = after
            query = query.where(or_(Transfer.created_at > at,
                                    and_(Transfer.created_at == at, Transfer.id > last_id)))
        with uow_factory() as uow:
            batch = list(uow.session.execute(
                query.order_by(Transfer.created_at, Transfer.id).limit(batch_size)).scalars())
            lines = [transaction_line(t) for t in batch]
        yield from lines
        if len(batch) < batch_size:
            return
        after = (batch[-1].created_at, batch[-1].id)


def transactions_csv(lines: Iterator[dict[str, Any]]) -> Iterator[str]:
    return stream(TRANSACTION_COLUMNS, lines,
                  lambda line: safe_cells(line[c] for c in TRANSACTION_COLUMNS))


def transactions_json(period: Period, lines: Iterator[dict[str, Any]]) -> Iterator[str]:
    """``{from, to, currency, items: [...]}`` written as it is read, in chunks."""
    head = json.dumps({**period.as_json(), "currency": CURRENCY})
    yield head[:-1] + ', "items": ['
    chunk: list[str] = []
    first = True
    for line in lines:
        chunk.append(("" if first else ",") + json.dumps(line))
        first = False
        if len(chunk) >= 100:
            yield "".join(chunk)
            chunk = []
    yield "".join(chunk) + "]}"
