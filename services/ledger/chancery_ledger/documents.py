"""Receipts and invoices as documents: a JSON-able dict, and a printable HTML page.

A *receipt* proves a settled deposit was paid. An *invoice* asks for the money of a
purchase-order deposit: "due <date>" while it is pending, "paid <date>" once the
operator has settled it. Card deposits are paid at once and have receipts, not invoices.

The seller on both is the CA operator, from ``CHANCERY_BILLING_NAME`` and
``CHANCERY_BILLING_ADDRESS`` (defaults below). Pages are rendered with Jinja2 with
autoescaping on, because names and purchase-order numbers come from people. Of a card
only the brand and the last four digits exist, so nothing more can ever be printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import jinja2
from chancery_shared import config as cfg
from chancery_shared.messaging.envelope import isoformat
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import current_service
from chancery_shared.web.problems import NotFound

from chancery_ledger.model import CARD, CURRENCY, PURCHASE_ORDER, Deposit, Receipt, format_usd

ABSENT = "—"  # what a page shows for a value the ledger does not have (yet)


@dataclasses.dataclass(frozen=True)
class BillingSettings:
    """Who issues receipts and invoices: the CA operator running this Chancery."""

    name: str = cfg.setting("CHANCERY_BILLING_NAME", "Chancery Certificate Authority")
    address: str = cfg.setting("CHANCERY_BILLING_ADDRESS", "")


def seller(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The seller block of a document; ``environ`` defaults to the running service's."""
    if environ is None:
        environ = current_service().runtime.environ
    settings = cfg.load(BillingSettings, environ)
    return {"name": settings.name, "address": settings.address or None}


def _day(moment: date | datetime | str | None) -> str | None:
    """A date as ``YYYY-MM-DD`` (times in UTC); ``None`` stays ``None``."""
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return isoformat(moment)[:10]
    if isinstance(moment, date):
        return moment.isoformat()
    return str(moment)[:10]


def _time(moment: datetime | str | None) -> str | None:
    if moment is None or isinstance(moment, str):
        return moment
    return isoformat(moment)


def _method_text(method: str, card: Mapping[str, str] | None, po_number: str | None) -> str:
    if method == CARD:
        if not card:
            return "Card"
        return f"{card.get('brand', 'card').title()} card ending {card.get('last4', '????')}"
    return f"Purchase order {po_number or ABSENT}"


# --- receipts ----------------------------------------------------------------------------


def receipt_document(receipt: Receipt, *, billing: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """A receipt in the public receipt shape (``GET /receipts/{id}``), plus the seller,
    the customer and display texts; JSON-able (times are RFC 3339 strings)."""
    deposit = receipt.deposit
    settled_by = ({"id": deposit.settled_by, "name": deposit.settled_by_name}
                  if deposit.settled_by and deposit.settled_by != deposit.requested_by else None)
    return {
        "id": receipt.id, "number": receipt.number, "account_id": receipt.customer_account_id,
        "deposit_id": deposit.id, "amount_cents": receipt.amount_cents, "currency": CURRENCY,
        "method": deposit.method, "card": deposit.card, "po_number": deposit.po_number,
        "paid_by": {"id": deposit.requested_by, "name": deposit.requested_by_name},
        "settled_by": settled_by,
        "description": f"Deposit of {format_usd(receipt.amount_cents)} by "
                       f"{deposit.describe_method()}",
        "issued_at": _time(receipt.issued_at),
        "seller": dict(billing) if billing is not None else seller(),
        "status": f"paid {_day(receipt.issued_at)}",
    }


def receipt_html(receipt: Mapping[str, Any], *, billing: Mapping[str, Any] | None = None
                 ) -> str:
    """The printable page of a receipt given in the public receipt shape (the dict
    ``views.get_receipt`` builds, or :func:`receipt_document`)."""
    page = {
        "number": receipt["number"],
        "issued": _day(receipt.get("issued_at")) or ABSENT,
        "account_id": receipt.get("account_id") or ABSENT,
        "deposit_id": receipt.get("deposit_id") or ABSENT,
        "paid_by": (receipt.get("paid_by") or {}).get("name") or ABSENT,
        "method": _method_text(receipt.get("method", ""), receipt.get("card"),
                               receipt.get("po_number")),
        "amount": format_usd(int(receipt["amount_cents"])),
        "status": f"paid {_day(receipt.get('issued_at')) or ABSENT}",
    }
    return _render("receipt.html", doc=page, seller=_seller_of(receipt, billing))


# --- invoices ----------------------------------------------------------------------------


def invoiced_deposit(uow: UnitOfWork, customer_account_id: str | None, deposit_id: str
                     ) -> Deposit:
    """The purchase-order deposit an invoice is for; 404 when missing, another account's,
    or paid by card (a card deposit has a receipt, not an invoice)."""
    deposit = uow.session.get(Deposit, deposit_id)
    if (deposit is None or deposit.customer_account_id != customer_account_id
            or deposit.method != PURCHASE_ORDER):
        raise NotFound("no such invoice")
    return deposit


def invoice_status(deposit: Deposit) -> tuple[str, str]:
    """``("due", "due 2026-04-30")`` while pending, ``("paid", "paid 2026-04-02")`` once
    settled; a due date or settlement date the ledger lacks shows as a dash."""
    if deposit.status == "settled":
        return "paid", f"paid {_day(deposit.settled_at) or ABSENT}"
    if deposit.status == "pending":
        return "due", f"due {_day(getattr(deposit, 'due_date', None)) or ABSENT}"
    return "void", "void"


def invoice_document(deposit: Deposit, *, billing: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The invoice of a purchase-order deposit; JSON-able. ``number`` and ``due_date``
    are ``None`` until the ledger records them."""
    assert deposit.method == PURCHASE_ORDER, "only purchase orders have invoices"
    status, status_text = invoice_status(deposit)
    receipt = deposit.receipt
    return {
        "id": deposit.id, "number": getattr(deposit, "invoice_number", None),
        "account_id": deposit.customer_account_id, "deposit_id": deposit.id,
        "seller": dict(billing) if billing is not None else seller(),
        "customer": {"account_id": deposit.customer_account_id},
        "issued_at": _time(deposit.created_at),
        "due_date": _day(getattr(deposit, "due_date", None)),
        "status": status, "status_text": status_text,
        "paid_at": _time(deposit.settled_at) if status == "paid" else None,
        "receipt_id": receipt.id if receipt is not None else None,
        "method": PURCHASE_ORDER, "po_number": deposit.po_number,
        "requested_by": {"id": deposit.requested_by, "name": deposit.requested_by_name},
        "description": f"Prepaid certificate funds, purchase order {deposit.po_number}",
        "amount_cents": deposit.amount_cents, "currency": CURRENCY,
    }


def invoice_html(invoice: Mapping[str, Any]) -> str:
    """The printable page of an invoice built by :func:`invoice_document`."""
    page = {
        "number": invoice.get("number") or ABSENT,
        "issued": _day(invoice.get("issued_at")) or ABSENT,
        "due": invoice.get("due_date") or ABSENT,
        "account_id": invoice["account_id"],
        "requested_by": (invoice.get("requested_by") or {}).get("name") or ABSENT,
        "method": _method_text(PURCHASE_ORDER, None, invoice.get("po_number")),
        "description": invoice.get("description") or ABSENT,
        "amount": format_usd(int(invoice["amount_cents"])),
        "status": invoice.get("status", ""),
        "status_text": invoice.get("status_text") or ABSENT,
    }
    return _render("invoice.html", doc=page, seller=_seller_of(invoice, None))


# --- rendering ---------------------------------------------------------------------------


def _seller_of(document: Mapping[str, Any], billing: Mapping[str, Any] | None
               ) -> Mapping[str, Any]:
    if billing is not None:
        return billing
    return document.get("seller") or seller()


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    """The package's templates, autoescaped: every value is text, never markup."""
    return jinja2.Environment(loader=jinja2.PackageLoader("chancery_ledger", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _render(template: str, **values: Any) -> str:
    return _templates().get_template(template).render(currency=CURRENCY, **values)
