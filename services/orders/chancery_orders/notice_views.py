"""HTTP entrypoints of the inventory export, the site seal and the renewal notices.

A second blueprint under the same ``/api/orders/v1`` prefix, beside :mod:`views` (the
order workflow), with its own schemas.
"""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import public, require
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from flask import Response
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from chancery_orders import inventory, notices, seal
from chancery_orders.schemas import Person, Rfc3339

api = Blueprint("certificates", __name__, url_prefix="/api/orders/v1",
                description="The certificate inventory as CSV, site seals and renewal notices")

SEAL_CACHE_SECONDS = 3600


def _uow() -> UnitOfWork:
    return current_service().uow()


# --- schemas ------------------------------------------------------------------------------


class DaysBefore(fields.List):
    def __init__(self, **kwargs: Any):
        super().__init__(fields.Integer(strict=True), metadata={
            "description": f"days before expiry, each {notices.MIN_DAYS} to {notices.MAX_DAYS}, "
                           "each once"}, **kwargs)


class Emails(fields.List):
    def __init__(self, **kwargs: Any):
        super().__init__(fields.String(), metadata={
            "description": "extra addresses told besides the requester and the assignees"},
            **kwargs)


class AccountNoticesInput(Schema):
    days_before = DaysBefore(required=True)
    emails = Emails(load_default=list)


class AccountNoticesSchema(Schema):
    days_before = fields.List(fields.Integer())
    emails = fields.List(fields.String())
    updated_at = Rfc3339(allow_none=True)
    updated_by = fields.Nested(Person, allow_none=True)


class OrderNoticesInput(Schema):
    days_before = DaysBefore(load_default=None, allow_none=True)
    emails = Emails(load_default=None, allow_none=True)
    enabled = fields.Boolean(load_default=True)


class OrderNoticeOverrides(Schema):
    days_before = fields.List(fields.Integer(), allow_none=True)
    emails = fields.List(fields.String(), allow_none=True)
    enabled = fields.Boolean(allow_none=True)


class OrderNoticesSchema(Schema):
    order_id = fields.String()
    enabled = fields.Boolean()
    days_before = fields.List(fields.Integer(), metadata={"description": "what applies"})
    emails = fields.List(fields.String(), metadata={"description": "what applies"})
    overrides = fields.Nested(OrderNoticeOverrides, metadata={
        "description": "the order's own values; null follows the account's defaults"})


# --- the inventory as CSV ----------------------------------------------------------------


@api.route("/orders.csv")
@api.arguments(inventory.InventoryFilterArgs, location="query")
@api.doc(responses={"200": {
    "description": "every matching order, newest first, after a header row",
    "content": {"text/csv": {"schema": {"type": "string"}}}}})
def export_orders(args: dict[str, Any]) -> Response:
    """The same search as ``GET /orders``, every match as one CSV file (columns: id, status,
    product, common_name, sans, unit, requester, price_cents, created_at, serial,
    not_before, not_after). Cells a spreadsheet would run as a formula start with ``'``."""
    principal = require(Permission.READ_ORDERS)
    orders = inventory.export(current_service().uow, principal,
                              inventory.InventoryFilter.from_args(args))
    return Response(inventory.csv_lines(orders), mimetype="text/csv", headers={
        "Content-Disposition": 'attachment; filename="certificates.csv"'})


# --- the site seal --------------------------------------------------------------------------


@api.route("/orders/<order_id>/seal.svg")
@api.doc(security=[], responses={
    "200": {"description": "the seal", "content": {"image/svg+xml": {
        "schema": {"type": "string"}}}},
    "404": {"description": "no such order, or its certificate is not issued, revoked or "
                           "expired (one answer for all)"}})
@public
def site_seal(order_id: str) -> Response:
    """The site seal of an issued, unrevoked, unexpired certificate (no token needed)."""
    with _uow() as uow:
        found = seal.seal_of(uow, order_id, utcnow())
    return Response(seal.render(found), mimetype="image/svg+xml", headers={
        "Cache-Control": f"public, max-age={SEAL_CACHE_SECONDS}",
        # opened on its own, the SVG may draw and nothing else
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


# --- renewal notices ------------------------------------------------------------------------


@api.route("/renewal-notices")
@api.response(200, AccountNoticesSchema)
def get_account_notices() -> Any:
    """The account's renewal-notice defaults (administrators)."""
    principal = require(Permission.RENEWAL_SETTINGS)
    with _uow() as uow:
        return notices.get_account_settings(uow, principal)


@api.route("/renewal-notices", methods=["PUT"])
@api.arguments(AccountNoticesInput)
@api.response(200, AccountNoticesSchema)
def set_account_notices(body: dict[str, Any]) -> Any:
    """Replace the account's defaults: the days before expiry a notice goes out (1 to
    365, each once) and extra addresses. Orders without an override follow at once."""
    principal = require(Permission.RENEWAL_SETTINGS)
    with _uow() as uow:
        return notices.set_account_settings(uow, principal, request_context(principal),
                                            body["days_before"], body["emails"])


@api.route("/orders/<order_id>/renewal-notices")
@api.response(200, OrderNoticesSchema)
def get_order_notices(order_id: str) -> Any:
    """What applies to the order, and its own overrides (admins; unit administrators for
    their units' orders)."""
    principal = require(Permission.RENEWAL_SETTINGS)
    with _uow() as uow:
        return notices.get_order_settings(uow, principal, order_id)


@api.route("/orders/<order_id>/renewal-notices", methods=["PUT"])
@api.arguments(OrderNoticesInput)
@api.response(200, OrderNoticesSchema)
def set_order_notices(body: dict[str, Any], order_id: str) -> Any:
    """Replace the order's override: ``days_before`` and ``emails`` (missing or null: as
    the account), ``enabled`` (default true; false sends this order no notice)."""
    principal = require(Permission.RENEWAL_SETTINGS)
    with _uow() as uow:
        return notices.set_order_settings(uow, principal, request_context(principal),
                                          order_id, days_before=body["days_before"],
                                          emails=body["emails"], enabled=body["enabled"])
