"""Receipts and invoices as documents: JSON, printable pages, who may read them."""

from __future__ import annotations

import shutil
import uuid
from datetime import date

import pytest
from chancery_ledger import documents
from chancery_ledger.model import Deposit, Receipt
from chancery_ledger.service import LedgerService
from chancery_shared.testing import make_runtime
from sqlalchemy import select, update

from .conftest import VISA_OK

HOSTILE = "<script>alert('x')</script>"
BILLING = {"name": "Example CA Ltd", "address": "1 Root Street\nTrustville"}


def purchase_order(caller, cents: int = 123_456, po_number: str = "PO-2026-0042") -> dict:
    response = caller.post("/deposits", {"method": "purchase_order", "amount_cents": cents,
                                         "po_number": po_number})
    assert response.status_code == 201, response.json
    return response.json


def set_po_number(service, deposit_id: str, po_number: str) -> None:
    """Write a PO number the API's own validation would refuse (defence in depth)."""
    with service.uow() as uow:
        uow.session.execute(update(Deposit).where(Deposit.id == deposit_id)
                            .values(po_number=po_number))
        uow.commit()


def stored_receipt(service, receipt_id: str) -> Receipt:
    with service.uow() as uow:
        return uow.session.execute(select(Receipt).where(Receipt.id == receipt_id)).scalar_one()


def html_of(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


# --- receipts ----------------------------------------------------------------------------


def test_a_receipt_page_shows_dollars_from_cents_and_never_the_card_number(login, service):
    admin = login("admin")
    deposit = admin.deposit_card(123_456).json
    receipt = documents.receipt_document(stored_receipt(service, deposit["receipt_id"]),
                                         billing=BILLING)
    assert receipt["amount_cents"] == 123_456 and receipt["currency"] == "USD"
    assert receipt["card"] == {"brand": "visa", "last4": "4242"}
    assert receipt["status"] == f"paid {receipt['issued_at'][:10]}"
    assert receipt["seller"] == BILLING

    page = documents.receipt_html(receipt)
    assert "$1,234.56 USD" in page
    assert "Visa card ending 4242" in page
    assert VISA_OK not in page and VISA_OK not in str(receipt)
    assert "Example CA Ltd" in page and "Trustville" in page
    assert "@media print" in page


def test_a_receipt_page_escapes_names_and_purchase_order_numbers(login, service):
    finance = login("finance", name=HOSTILE)
    operator = login("operator", account_id=None)
    deposit = purchase_order(finance)
    set_po_number(service, deposit["id"], HOSTILE)
    settled = operator.post(f"/deposits/{deposit['id']}/settle").json
    receipt = documents.receipt_document(stored_receipt(service, settled["receipt_id"]),
                                         billing={"name": HOSTILE, "address": None})
    page = documents.receipt_html(receipt)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page  # shown as text, not run
    assert "Purchase order &lt;script&gt;" in page


def test_the_receipt_page_takes_the_shape_the_receipts_route_answers(login, app_context):
    """``views.get_receipt`` may hand its own dict (times still datetimes) to the page."""
    admin = login("admin")
    deposit = admin.deposit_card(4_200).json
    body = admin.get(f"/receipts/{deposit['receipt_id']}").json
    page = documents.receipt_html(body)
    assert "$42.00" in page and body["number"] in page
    assert documents.seller()["name"] in page  # the running service's billing name


@pytest.mark.parametrize("environ, expected", [
    ({}, {"name": "Chancery Certificate Authority", "address": None}),
    ({"CHANCERY_BILLING_NAME": "Acme PKI", "CHANCERY_BILLING_ADDRESS": "2 Key Lane"},
     {"name": "Acme PKI", "address": "2 Key Lane"}),
])
def test_the_seller_is_the_configured_ca_operator(environ, expected):
    assert documents.seller(environ) == expected


# --- invoices ----------------------------------------------------------------------------


def test_a_pending_purchase_order_has_an_invoice_that_is_due(login):
    finance = login("finance", name="Fay Finance")
    deposit = purchase_order(finance)
    invoice = finance.get(f"/invoices/{deposit['id']}")
    assert invoice.status_code == 200, invoice.json
    body = invoice.json
    assert body["deposit_id"] == deposit["id"] and body["account_id"] == finance.account_id
    assert body["customer"] == {"account_id": finance.account_id}
    assert (body["status"], body["amount_cents"], body["currency"]) == ("due", 123_456, "USD")
    assert body["po_number"] == "PO-2026-0042"
    assert body["requested_by"]["name"] == "Fay Finance"
    assert body["seller"]["name"] == "Chancery Certificate Authority"
    assert body["status_text"] == f"due {body['due_date'] or '—'}"
    assert (body["paid_at"], body["receipt_id"]) == (None, None)


def test_a_settled_purchase_order_invoice_is_paid_and_names_its_receipt(login):
    admin = login("admin")
    operator = login("operator", account_id=None)
    deposit = purchase_order(admin)
    settled = operator.post(f"/deposits/{deposit['id']}/settle").json
    body = admin.get(f"/invoices/{deposit['id']}").json
    assert body["status"] == "paid"
    assert body["status_text"] == f"paid {settled['settled_at'][:10]}"
    assert body["receipt_id"] == settled["receipt_id"]
    assert body["paid_at"] == settled["settled_at"]


def test_an_invoice_prints_as_an_escaped_html_page_in_dollars(login, service):
    finance = login("finance", name=HOSTILE)
    deposit = purchase_order(finance)
    set_po_number(service, deposit["id"], HOSTILE)
    page = html_of(finance.get(f"/invoices/{deposit['id']}", headers={"Accept": "text/html"}))
    assert "$1,234.56 USD" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Purchase order &lt;script&gt;" in page
    assert "@media print" in page
    assert "Due date" in page


def test_an_invoice_page_shows_a_dash_for_what_the_ledger_lacks(login, service):
    finance = login("finance")
    deposit = purchase_order(finance)
    with service.uow() as uow:
        stored = uow.session.get(Deposit, deposit["id"])
        invoice = documents.invoice_document(stored, billing=BILLING)
    invoice.update(number=None, due_date=None, status_text="due —")
    page = documents.invoice_html(invoice)
    assert "Invoice —" in page
    assert "<td>—</td>" in page  # the due date


def test_an_invoice_shows_its_number_and_due_date_when_recorded(login, service):
    finance = login("finance")
    deposit = purchase_order(finance)
    with service.uow() as uow:
        stored = uow.session.get(Deposit, deposit["id"])
        stored.invoice_number, stored.due_date = "INV-000007", date(2026, 4, 30)
        invoice = documents.invoice_document(stored, billing=BILLING)
    assert (invoice["number"], invoice["due_date"]) == ("INV-000007", "2026-04-30")
    assert invoice["status_text"] == "due 2026-04-30"
    page = documents.invoice_html(invoice)
    assert "Invoice INV-000007" in page and "due 2026-04-30" in page


def test_the_invoice_seller_comes_from_the_billing_settings(
        tmp_path, tokens, migrated_database):
    var = tmp_path / "billed"
    var.mkdir()
    shutil.copyfile(migrated_database, var / "ledger.db")
    service = LedgerService(make_runtime(var, tokens, CHANCERY_BILLING_NAME=HOSTILE,
                                         CHANCERY_BILLING_ADDRESS="9 Chain Road"))
    try:
        client = service.create_app().test_client()
        headers = tokens.headers(role="admin", account_id=str(uuid.uuid4()),
                                 user_id=str(uuid.uuid4()), name="Ada Admin")
        created = client.post("/api/ledger/v1/deposits", headers=headers, json={
            "method": "purchase_order", "amount_cents": 500, "po_number": "PO-1"}).json
        path = f"/api/ledger/v1/invoices/{created['id']}"
        assert client.get(path, headers=headers).json["seller"] == {
            "name": HOSTILE, "address": "9 Chain Road"}
        page = html_of(client.get(path, headers={**headers, "Accept": "text/html"}))
        assert "&lt;script&gt;" in page and "<script>" not in page and "9 Chain Road" in page
    finally:
        service.dispose()


def test_only_purchase_orders_of_the_callers_account_have_invoices(login):
    admin = login("admin")
    card = admin.deposit_card(1_000).json
    po = purchase_order(admin)
    assert admin.get(f"/invoices/{card['id']}").status_code == 404  # paid by card
    assert admin.get(f"/invoices/{uuid.uuid4()}").status_code == 404
    stranger = login("admin").get(f"/invoices/{po['id']}")
    assert stranger.status_code == 404 and po["id"] not in stranger.get_data(as_text=True)


@pytest.mark.parametrize("role", ["limited", "unit_admin", "operator"])
def test_roles_without_finance_may_not_read_invoices(login, role):
    owner = login("admin")
    po = purchase_order(owner)
    caller = login(role, account_id=None if role == "operator" else owner.account_id)
    response = caller.get(f"/invoices/{po['id']}")
    assert response.status_code == 403
    assert response.json["missing_permission"] == "view_finance"


@pytest.fixture
def app_context(service):
    """An application context, for document code that asks the running service."""
    with service.create_app().app_context():
        yield
