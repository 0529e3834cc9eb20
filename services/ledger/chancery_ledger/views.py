"""The ledger's HTTP entrypoints: parse, check the role, call one handler, answer."""

from __future__ import annotations

import re
from typing import Any

from chancery_shared.auth.permissions import Permission, allows, reads_unit_funds
from chancery_shared.auth.policy import require
from chancery_shared.auth.tokens import Principal
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from chancery_shared.web.idempotency import HEADER, Claim, fingerprint
from chancery_shared.web.problems import InvalidField, NotFound
from flask import Response, request
from flask_smorest import Blueprint

from chancery_ledger import documents, handlers, schemas
from chancery_ledger.cards import CardDetails
from chancery_ledger.model import (
    CARD,
    CUSTOMER_AVAILABLE,
    CUSTOMER_HELD,
    Deposit,
    Receipt,
    Transfer,
    format_usd,
)
from chancery_ledger.schemas import deposit_view

api = Blueprint("ledger", __name__, url_prefix="/api/ledger/v1",
                description="Balances, deposits, receipts and every money movement")



def _uow():
    return current_service().uow()


def _finance_reader() -> Principal:
    return require(Permission.VIEW_FINANCE)


@api.route("/balance")
@api.response(200, schemas.BalanceSchema)
def balance():
    """The caller's account balances: available to spend, and reserved for open orders."""
    principal = _finance_reader()
    with _uow() as uow:
        return handlers.balance_of(uow, principal.account_id)


# --- deposits ----------------------------------------------------------------------------


def _safe_request_shape(body: dict[str, Any]) -> dict[str, Any]:
    """The request without the card number and CVC, for the idempotency fingerprint."""
    shape = {k: v for k, v in body.items() if k != "card"}
    if "card" in body:
        card = CardDetails.from_input(**body["card"])
        shape["card"] = {"brand": card.brand, "last4": card.last4,
                         "exp_month": card.exp_month, "exp_year": card.exp_year}
    return shape


@api.route("/deposits", methods=["POST"])
@api.arguments(schemas.DepositRequest)
@api.response(201, schemas.DepositSchema)
@api.alt_response(422, description="a field is invalid (named in `errors`)")
@api.alt_response(503, description="the payment processor is unavailable; nothing was charged")
@api.doc(parameters=[{"in": "header", "name": HEADER, "required": False,
                      "schema": {"type": "string", "maxLength": 255},
                      "description": "makes a retry safe: a repeat returns the first response"}])
def create_deposit(body):
    """Add funds: by card (settled or declined at once) or by purchase order (pending).

    Only the card's brand and last four digits are kept. Send an `Idempotency-Key`
    header to make a retry safe: a repeat returns the first response.
    """
    principal = require(Permission.DEPOSIT_FUNDS)
    service = current_service()
    key = request.headers.get(HEADER)
    claim: Claim | None = None
    if key is not None:
        started = service.idempotency.begin(principal.user_id, key, "POST", request.path,
                                            fingerprint(_safe_request_shape(body)))
        if isinstance(started, Response):
            return started
        claim = started

    def remember(uow, deposit: Deposit) -> None:
        if claim is not None:
            service.idempotency.complete(uow.session, claim, 201,
                                         schemas.DepositSchema().dump(deposit_view(deposit)))

    context = request_context(principal)
    try:
        with _uow() as uow:
            if body["method"] == CARD:
                deposit = handlers.deposit_by_card(
                    uow, service.payment_processor, principal, context,
                    amount_cents=body["amount_cents"],
                    card=CardDetails.from_input(**body["card"]), before_commit=remember)
            else:
                deposit = handlers.deposit_by_purchase_order(
                    uow, principal, context, amount_cents=body["amount_cents"],
                    po_number=body["po_number"],
                    due_in_days=body.get("due_in_days", handlers.DEFAULT_DUE_IN_DAYS),
                    before_commit=remember)
            return deposit_view(deposit), 201
    except BaseException:
        if claim is not None:
            service.idempotency.abandon(claim)
        raise


@api.route("/deposits")
@api.arguments(schemas.DepositListArgs, location="query")
@api.response(200, schemas.DepositPage)
def list_deposits(args):
    """Deposits, newest first: the account's (admin, finance) or every account's (operator,
    e.g. `?status=pending` for purchase orders to settle)."""
    principal = require(Permission.READ_DEPOSITS)
    with _uow() as uow:
        items, cursor = handlers.list_deposits(uow, principal, status=args.get("status"),
                                               limit=args["limit"], cursor=args["cursor"])
        return {"items": [deposit_view(d) for d in items], "next_cursor": cursor}


@api.route("/deposits/<deposit_id>")
@api.response(200, schemas.DepositSchema)
def get_deposit(deposit_id):
    principal = require(Permission.READ_DEPOSITS)
    with _uow() as uow:
        return deposit_view(handlers.get_deposit(uow, principal, deposit_id))


@api.route("/deposits/<deposit_id>/settle", methods=["POST"])
@api.response(200, schemas.DepositSchema)
@api.alt_response(409, description="the deposit is not a pending purchase order")
def settle_deposit(deposit_id):
    """Platform operator: the purchase order was paid; credit the account."""
    principal = require(Permission.SETTLE_DEPOSITS)
    with _uow() as uow:
        return deposit_view(handlers.settle_deposit(uow, principal, request_context(principal),
                                                    deposit_id))


# --- movements and receipts --------------------------------------------------------------


def _transaction(transfer: Transfer) -> dict[str, Any]:
    return {"id": transfer.id, "type": transfer.kind, "amount_cents": transfer.amount_cents,
            "available_change_cents": transfer.effect_on(CUSTOMER_AVAILABLE),
            "reserved_change_cents": transfer.effect_on(CUSTOMER_HELD),
            "available_after_cents": transfer.available_after_cents,
            "reserved_after_cents": transfer.reserved_after_cents,
            "description": transfer.description, "order_id": transfer.order_id,
            "deposit_id": transfer.deposit_id, "occurred_at": transfer.created_at}


@api.route("/transactions")
@api.arguments(schemas.TransactionArgs, location="query")
@api.response(200, schemas.TransactionPage)
def list_transactions(args):
    """Every movement of the account's money, newest first (`from` inclusive, `to` exclusive)."""
    principal = _finance_reader()
    with _uow() as uow:
        items, cursor = handlers.list_transactions(
            uow, principal.account_id, limit=args["limit"], cursor=args["cursor"],
            since=args.get("from_"), until=args.get("to"))
        return {"items": [_transaction(t) for t in items], "next_cursor": cursor}


def _receipt(receipt: Receipt) -> dict[str, Any]:
    deposit = receipt.deposit
    settled_by = ({"id": deposit.settled_by, "name": deposit.settled_by_name}
                  if deposit.settled_by and deposit.settled_by != deposit.requested_by else None)
    return {"id": receipt.id, "number": receipt.number,
            "account_id": receipt.customer_account_id, "deposit_id": deposit.id,
            "amount_cents": receipt.amount_cents, "currency": "USD", "method": deposit.method,
            "card": deposit.card, "po_number": deposit.po_number,
            "paid_by": {"id": deposit.requested_by, "name": deposit.requested_by_name},
            "settled_by": settled_by,
            "description": f"Deposit of {format_usd(receipt.amount_cents)} by "
                           f"{deposit.describe_method()}",
            "issued_at": receipt.issued_at}


@api.route("/receipts/<receipt_id>")
@api.response(200, schemas.ReceiptSchema)
def get_receipt(receipt_id):
    """The receipt of a settled deposit (JSON; `Accept: text/html` for a printable page)."""
    principal = _finance_reader()
    with _uow() as uow:
        receipt = _receipt(handlers.get_receipt(uow, principal.account_id, receipt_id))
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        html = documents.receipt_html(receipt)
        return Response(html, mimetype="text/html")
    return receipt


# --- division (unit) funds ----------------------------------------------------------------

IDEMPOTENCY_DOC = {"in": "header", "name": HEADER, "required": False,
                   "schema": {"type": "string", "maxLength": 255},
                   "description": "makes a retry safe: a repeat returns the first response"}


def _unit_id(unit_id: str) -> str:
    """Units live in identity; the ledger checks only that this looks like a unit id."""
    if not re.fullmatch(schemas.UNIT_ID, unit_id):
        raise InvalidField("unit_id", "is not a unit id (letters, digits, - and _, at most 36)")
    return unit_id


def _move_unit_funds(unit_id: str, body: dict[str, Any], *, returning: bool):
    """Allocate or return, with the Idempotency-Key stored in the same transaction as the
    money moved (a retried allocation never moves the money twice)."""
    principal = require(Permission.DEPOSIT_FUNDS)
    unit_id = _unit_id(unit_id)
    service = current_service()
    key = request.headers.get(HEADER)
    claim: Claim | None = None
    if key is not None:
        started = service.idempotency.begin(principal.user_id, key, "POST", request.path,
                                            fingerprint(body))
        if isinstance(started, Response):
            return started
        claim = started

    def remember(uow, view: dict[str, Any]) -> None:
        if claim is not None:
            service.idempotency.complete(uow.session, claim, 201,
                                         schemas.UnitFundsSchema().dump(view))

    try:
        with _uow() as uow:
            return handlers.move_unit_funds(
                uow, principal, request_context(principal), unit_id=unit_id,
                amount_cents=body["amount_cents"], returning=returning,
                before_commit=remember), 201
    except BaseException:
        if claim is not None:
            service.idempotency.abandon(claim)
        raise


@api.route("/units/<unit_id>/funds", methods=["POST"])
@api.arguments(schemas.UnitFundsRequest)
@api.response(201, schemas.UnitFundsSchema)
@api.alt_response(409, description="the account's available balance is short")
@api.alt_response(422, description="a field is invalid (named in `errors`)")
@api.doc(parameters=[IDEMPOTENCY_DOC])
def allocate_unit_funds(body, unit_id):
    """Give part of the account's available balance to a business unit: its orders spend
    it first. Answers the unit's funds."""
    return _move_unit_funds(unit_id, body, returning=False)


@api.route("/units/<unit_id>/funds/return", methods=["POST"])
@api.arguments(schemas.UnitFundsRequest)
@api.response(201, schemas.UnitFundsSchema)
@api.alt_response(409, description="the unit has less available (not reserved) than asked")
@api.alt_response(422, description="a field is invalid (named in `errors`)")
@api.doc(parameters=[IDEMPOTENCY_DOC])
def return_unit_funds(body, unit_id):
    """Give part of a unit's available funds back to the account's available balance."""
    return _move_unit_funds(unit_id, body, returning=True)


@api.route("/units/<unit_id>/funds")
@api.response(200, schemas.UnitFundsSchema)
@api.alt_response(404, description="a unit administrator asked about a unit not theirs")
def get_unit_funds(unit_id):
    """One unit's funds (zeros for a unit never funded). Finance and admins read every
    unit's; a unit administrator reads their own units' only."""
    principal = require(Permission.READ_UNIT_FUNDS)
    unit_id = _unit_id(unit_id)
    if not reads_unit_funds(principal, unit_id):
        raise NotFound("no such business unit")
    with _uow() as uow:
        return handlers.unit_funds(uow, principal.account_id, unit_id)


@api.route("/units/funds")
@api.response(200, schemas.UnitFundsList)
def list_unit_funds():
    """The funds of every unit the account ever gave money to (a unit administrator: of
    their own units)."""
    principal = require(Permission.READ_UNIT_FUNDS)
    only = None if allows(principal, Permission.VIEW_FINANCE) else principal.unit_ids
    with _uow() as uow:
        return {"items": handlers.all_unit_funds(uow, principal.account_id, only=only)}


# --- the low-balance warning --------------------------------------------------------------


@api.route("/settings/low-balance")
@api.response(200, schemas.LowBalanceSchema)
def get_low_balance():
    """The account's low-balance warning (off until set)."""
    principal = _finance_reader()
    with _uow() as uow:
        return handlers.low_balance_setting(uow, principal.account_id)


@api.route("/settings/low-balance", methods=["PUT"])
@api.arguments(schemas.LowBalanceSchema)
@api.response(200, schemas.LowBalanceSchema)
@api.alt_response(422, description="a field is invalid (named in `errors`)")
def put_low_balance(body):
    """Warn (event and e-mail to finance users and admins) each time the available
    balance falls below `threshold_cents`."""
    principal = require(Permission.DEPOSIT_FUNDS)
    with _uow() as uow:
        return handlers.set_low_balance(uow, principal, request_context(principal),
                                        threshold_cents=body["threshold_cents"],
                                        enabled=body["enabled"])
