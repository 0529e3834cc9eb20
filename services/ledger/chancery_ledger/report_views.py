"""The ledger's finance read side over HTTP: spend and transaction reports, invoices.

Everything here is for the account's admins and finance users (``view_finance``, as
balance, transactions and receipts); another account's deposit is a 404.
"""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import require
from chancery_shared.service import current_service
from flask import Response, request
from flask_smorest import Blueprint

from chancery_ledger import documents, reports

api = Blueprint("ledger-reports", __name__, url_prefix="/api/ledger/v1",
                description="Finance reports (spend, transactions) and invoices")

CSV, HTML, JSON = "text/csv", "text/html", "application/json"


def _wants(alternative: str) -> bool:
    """Whether the client's ``Accept`` prefers ``alternative`` to JSON (JSON by default)."""
    return request.accept_mimetypes.best_match([JSON, alternative]) == alternative


def _csv(lines: Any, filename: str) -> Response:
    return Response(lines, mimetype=CSV,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _doc_200(description: str, json_schema: Any, alternative: str) -> dict[str, Any]:
    """The 200 answer in OpenAPI: JSON, or the ``alternative`` type on request."""
    return {"responses": {"200": {"description": description, "content": {
        JSON: {"schema": json_schema}, alternative: {"schema": {"type": "string"}}}}}}


@api.route("/reports/spend")
@api.arguments(reports.SpendArgs, location="query")
@api.response(200, reports.SpendReportSchema)
@api.doc(**_doc_200("the spend report; `Accept: text/csv` for a CSV file",
                    reports.SpendReportSchema, CSV))
def spend_report(args: dict[str, Any]) -> Any:
    """What the account spent in a period, by business unit, product or month.

    Spend is captured prices (certificates issued) minus refunds of captured prices,
    each at the time it happened: a refund counts, negative, in the month of the
    refund. `from`/`to` are dates (UTC days, both included) or RFC 3339 times (`to`
    exclusive), at most 366 days apart. `Accept: text/csv` answers a CSV file.
    """
    principal = require(Permission.VIEW_FINANCE)
    period: reports.Period = args["period"]
    with current_service().uow() as uow:
        report = reports.spend(uow, principal.account_id, period, args["group_by"])
    if _wants(CSV):
        return _csv(reports.spend_csv(report),
                    f"spend-by-{args['group_by']}-{period.start:%Y%m%d}.csv")
    return report


@api.route("/reports/transactions")
@api.arguments(reports.PeriodArgs, location="query")
@api.doc(**_doc_200(
    "`{from, to, currency, items: [{occurred_at, id, type, amount_cents, "
    "available_change_cents, reserved_change_cents, available_after_cents, "
    "reserved_after_cents, order_id, deposit_id, unit_id, description}]}`, oldest first; "
    "`Accept: text/csv` for the same lines as a CSV file", {"type": "object"}, CSV))
def transactions_report(args: dict[str, Any]) -> Response:
    """Every movement of the account's money in a period, oldest first (a statement).

    Streamed as it is read, so a year of movements is one download.
    """
    principal = require(Permission.VIEW_FINANCE)
    period: reports.Period = args["period"]
    lines = reports.transaction_lines(current_service().uow, principal.account_id, period)
    if _wants(CSV):
        return _csv(reports.transactions_csv(lines),
                    f"transactions-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv")
    return Response(reports.transactions_json(period, lines), mimetype=JSON)


@api.route("/invoices/<deposit_id>")
@api.doc(**_doc_200(
    "the invoice of a purchase-order deposit: `{id, number, account_id, seller, "
    "customer, issued_at, due_date, status: due|paid, status_text, paid_at, "
    "po_number, amount_cents, currency, ...}`; `Accept: text/html` for a printable "
    "page", {"type": "object"}, HTML))
@api.alt_response(404, description="no purchase-order deposit of the caller's account")
def get_invoice(deposit_id: str) -> Any:
    """The invoice of a purchase-order deposit: due while pending, paid once settled.

    `Accept: text/html` answers a printable page. Card deposits are paid at once and
    have receipts instead.
    """
    principal = require(Permission.VIEW_FINANCE)
    with current_service().uow() as uow:
        invoice = documents.invoice_document(
            documents.invoiced_deposit(uow, principal.account_id, deposit_id))
    if _wants(HTML):
        return Response(documents.invoice_html(invoice), mimetype=HTML)
    return invoice
