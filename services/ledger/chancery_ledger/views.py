"""The ledger's HTTP entrypoints: parse, check the role, call one handler, answer."""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import require
from chancery_shared.auth.tokens import Principal
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from chancery_shared.web.idempotency import HEADER, Claim, fingerprint
from flask import Response, render_template_string, request
from flask_smorest import Blueprint

from chancery_ledger import handlers, schemas
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
                    po_number=body["po_number"], before_commit=remember)
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


RECEIPT_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Receipt {{ r.number }}</title>
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}
td{padding:.3em 1em .3em 0}</style></head>
<body><h1>Receipt {{ r.number }}</h1>
<table>
<tr><td>Issued</td><td>{{ r.issued_at.strftime('%Y-%m-%d %H:%M UTC') }}</td></tr>
<tr><td>Account</td><td>{{ r.account_id }}</td></tr>
<tr><td>Paid by</td><td>{{ r.paid_by.name }}</td></tr>
<tr><td>For</td><td>{{ r.description }}</td></tr>
<tr><td>Amount</td><td><strong>{{ amount }} USD</strong></td></tr>
</table></body></html>"""


@api.route("/receipts/<receipt_id>")
@api.response(200, schemas.ReceiptSchema)
def get_receipt(receipt_id):
    """The receipt of a settled deposit (JSON; `Accept: text/html` for a printable page)."""
    principal = _finance_reader()
    with _uow() as uow:
        receipt = _receipt(handlers.get_receipt(uow, principal.account_id, receipt_id))
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        html = render_template_string(RECEIPT_HTML, r=receipt,
                                      amount=format_usd(receipt["amount_cents"]))
        return Response(html, mimetype="text/html")
    return receipt
