"""The certificate inventory: finding orders and their certificates, a page or a file at a time.

Everything is filtered in SQL on top of :func:`access.visible_orders` (who may see
what is decided there, not here). The name filter looks in ``order_names``, one row per
name of an order (ASCII and, for internationalised names, Unicode forms), which an ORM
hook keeps in step with the order's names whoever changes them; "the current
certificate" is an order's newest stored certificate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import idna
from chancery_shared.auth.tokens import Principal
from chancery_shared.messaging.envelope import isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.web.csv_export import safe_cells, stream
from chancery_shared.web.pagination import PageArgs, decode_cursor, encode_cursor
from chancery_shared.web.problems import InvalidField
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    Select,
    String,
    and_,
    delete,
    event,
    exists,
    insert,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Mapper, mapped_column, raiseload

from chancery_orders import access
from chancery_orders.model import ORDER_STATUSES, Base, Certificate, Order

EXPORT_BATCH_SIZE = 500
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


# --- the searchable names ---------------------------------------------------------------


class OrderName(Base):
    """One name an order's certificate carries, in a form people type (for the search)."""

    __tablename__ = "order_names"
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"),
                                          primary_key=True)
    name: Mapped[str] = mapped_column(String(300), primary_key=True)


def searchable_names(order: Order) -> set[str]:
    """The order's names as stored (ASCII, lower case) plus the Unicode form of each
    internationalised one, so ``bücher`` finds ``xn--bcher-kva.de``."""
    found = {name.lower() for name in [order.common_name, *(order.sans or [])] if name}
    for name in list(found):
        if "xn--" in name:
            try:
                found.add(idna.decode(name.removeprefix("*.")).lower())
            except (idna.IDNAError, UnicodeError):
                pass
    return found


def _write_names(connection: Connection, order: Order) -> None:
    connection.execute(delete(OrderName.__table__).where(OrderName.order_id == order.id))
    rows = [{"order_id": order.id, "name": name} for name in sorted(searchable_names(order))]
    if rows:
        connection.execute(insert(OrderName.__table__), rows)


@event.listens_for(Order, "after_insert")
def _names_of_new_order(_mapper: Mapper[Any], connection: Connection, order: Order) -> None:
    _write_names(connection, order)


@event.listens_for(Order, "after_update")
def _names_of_edited_order(_mapper: Mapper[Any], connection: Connection, order: Order) -> None:
    state = inspect(order)
    if state.attrs.sans.history.has_changes() or state.attrs.common_name.history.has_changes():
        _write_names(connection, order)


# --- the filter ---------------------------------------------------------------------------


class Rfc3339Field(fields.String):
    """An RFC 3339 date-time with its offset (``2027-01-31T00:00:00Z``); nothing looser."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or not RFC3339.match(value.strip()):
            raise ValidationError("must be an RFC 3339 date-time with an offset, such as "
                                  "2027-01-31T00:00:00Z")
        try:
            return datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError as exc:
            raise ValidationError("is not a valid date-time") from exc


class StatusList(fields.String):
    """``issued`` or a comma list ``issued,revoked``; every part must be an order status."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> tuple[str, ...]:
        if not isinstance(value, str):
            raise ValidationError("must be a comma-separated list of order statuses")
        parts = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
        unknown = [part for part in parts if part not in ORDER_STATUSES]
        if not parts or unknown:
            raise ValidationError(f"{', '.join(unknown) or 'nothing'} is not an order status; "
                                  f"use {', '.join(ORDER_STATUSES)}")
        return parts


class InventoryFilterArgs(Schema):
    """The filters of ``GET /orders`` and ``GET /orders.csv`` (query parameters)."""

    status = StatusList(metadata={"description": "one status or a comma list: "
                                                 + ", ".join(ORDER_STATUSES)})
    unit_id = fields.String(validate=validate.Length(min=1, max=64))
    requester_id = fields.String(validate=validate.Length(min=1, max=64))
    name = fields.String(validate=validate.Length(min=1, max=253),
                         metadata={"description": "part of the common name or of any SAN, "
                                                  "case-insensitive"})
    product = fields.String(validate=validate.Length(min=1, max=64),
                            metadata={"description": "a product code"})
    expiring_before = Rfc3339Field(metadata={
        "format": "date-time",
        "description": "the current certificate's not_after is before this RFC 3339 time"})
    issued_after = Rfc3339Field(metadata={
        "format": "date-time",
        "description": "the current certificate's not_before is at or after this time"})
    issued_before = Rfc3339Field(metadata={
        "format": "date-time",
        "description": "the current certificate's not_before is before this time"})


class InventoryArgs(InventoryFilterArgs, PageArgs):
    """The filters plus ``limit`` (default 50, at most 500) and ``cursor``."""


@dataclasses.dataclass(frozen=True)
class InventoryFilter:
    statuses: tuple[str, ...] = ()
    unit_id: str | None = None
    requester_id: str | None = None
    name: str | None = None
    product: str | None = None
    expiring_before: datetime | None = None
    issued_after: datetime | None = None
    issued_before: datetime | None = None

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> InventoryFilter:
        return cls(statuses=args.get("status") or (), unit_id=args.get("unit_id"),
                   requester_id=args.get("requester_id"), name=args.get("name"),
                   product=args.get("product"), expiring_before=args.get("expiring_before"),
                   issued_after=args.get("issued_after"),
                   issued_before=args.get("issued_before"))


def name_pattern(text: str) -> str:
    """A LIKE pattern for a fragment of a name as typed: lower case, no trailing dot,
    LIKE's own characters escaped (with ``\\``)."""
    fragment = text.strip().lower().rstrip(".")
    return "%" + re.sub(r"([\\%_])", r"\\\1", fragment) + "%"


def _current_certificate(column: Any) -> Any:
    """``column`` of the order's newest certificate (a correlated scalar subquery)."""
    return (select(column).where(Certificate.order_id == Order.id)
            .order_by(Certificate.created_at.desc(), Certificate.id.desc()).limit(1)
            .correlate(Order).scalar_subquery())


def conditions(principal: Principal, wanted: InventoryFilter) -> list[ColumnElement[bool]]:
    """The SQL conditions: what the caller may see, narrowed by ``wanted``."""
    where: list[ColumnElement[bool]] = [access.visible_orders(principal)]
    if wanted.statuses:
        where.append(Order.status.in_(wanted.statuses))
    if wanted.unit_id:
        where.append(Order.unit_id == wanted.unit_id)
    if wanted.requester_id:
        where.append(Order.requester_id == wanted.requester_id)
    if wanted.product:
        where.append(Order.product_code == wanted.product)
    if wanted.name:
        where.append(exists().where(OrderName.order_id == Order.id,
                                    OrderName.name.like(name_pattern(wanted.name),
                                                        escape="\\")))
    if wanted.expiring_before:
        where.append(_current_certificate(Certificate.not_after) < wanted.expiring_before)
    if wanted.issued_after:
        where.append(_current_certificate(Certificate.not_before) >= wanted.issued_after)
    if wanted.issued_before:
        where.append(_current_certificate(Certificate.not_before) < wanted.issued_before)
    return where


def _after(cursor: str | None) -> ColumnElement[bool] | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    try:
        at = datetime.fromisoformat(str(position["at"]))
        last_id = str(position["id"])
    except (KeyError, ValueError) as exc:
        raise InvalidField("cursor", "is not a cursor this endpoint returned") from exc
    if at.tzinfo is None:
        raise InvalidField("cursor", "is not a cursor this endpoint returned")
    return or_(Order.created_at < at, and_(Order.created_at == at, Order.id < last_id))


def _query(where: Iterable[ColumnElement[bool]], after: ColumnElement[bool] | None,
           limit: int) -> Select[tuple[Order]]:
    query = select(Order).where(*where)
    if after is not None:
        query = query.where(after)
    return query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)


def _cursor_of(order: Order) -> str:
    return encode_cursor({"at": order.created_at.isoformat(), "id": order.id})


def search(uow: UnitOfWork, principal: Principal, wanted: InventoryFilter, *, limit: int,
           cursor: str | None) -> tuple[list[Order], str | None]:
    """One page of matching orders, newest first, and the cursor of the next page."""
    query = _query(conditions(principal, wanted), _after(cursor), limit + 1)
    rows = list(uow.session.execute(query).scalars())
    next_cursor = _cursor_of(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def export(uow_factory: Callable[[], UnitOfWork], principal: Principal,
           wanted: InventoryFilter, *, batch_size: int = EXPORT_BATCH_SIZE) -> Iterator[Order]:
    """Every matching order, newest first, read in short transactions of a batch each
    (a slow download must not hold SQLite's write lock: every transaction there is
    ``BEGIN IMMEDIATE``). The filter is built before the first row is read."""
    where = conditions(principal, wanted)

    def orders() -> Iterator[Order]:
        after: ColumnElement[bool] | None = None
        while True:
            with uow_factory() as uow:
                query = _query(where, after, batch_size).options(
                    raiseload(Order.history), raiseload(Order.issuances))
                batch = list(uow.session.execute(query).scalars())
            yield from batch
            if len(batch) < batch_size:
                return
            last = batch[-1]
            after = or_(Order.created_at < last.created_at,
                        and_(Order.created_at == last.created_at, Order.id < last.id))

    return orders()


# --- CSV ----------------------------------------------------------------------------------

CSV_COLUMNS = ("id", "status", "product", "common_name", "sans", "unit", "requester",
               "price_cents", "created_at", "serial", "not_before", "not_after")


def csv_row(order: Order) -> list[str]:
    """One order as CSV cells, in :data:`CSV_COLUMNS` order."""
    certificate = order.certificate
    unit = order.unit
    values: list[Any] = [
        order.id, order.status, order.product_code, order.common_name, " ".join(order.sans),
        (unit["name"] or unit["id"]) if unit else "", order.requester_name, order.price_cents,
        isoformat(order.created_at),
        certificate.serial if certificate else "",
        isoformat(certificate.not_before) if certificate else "",
        isoformat(certificate.not_after) if certificate else "",
    ]
    return safe_cells(values)


def csv_lines(orders: Iterable[Order], *, flush_every: int = 100) -> Iterator[str]:
    """The header, then the orders, in chunks of ``flush_every`` rows (for streaming)."""
    return stream(CSV_COLUMNS, orders, csv_row, flush_every=flush_every)
