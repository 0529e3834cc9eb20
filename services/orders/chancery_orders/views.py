"""orders' HTTP entrypoints: parse, check the role, call one handler, answer."""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import current_principal, require
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from chancery_shared.web.idempotency import HEADER as IDEMPOTENCY_HEADER
from chancery_shared.web.idempotency import idempotent
from flask import Response, request
from flask_smorest import Blueprint

from chancery_orders import handlers, inventory, schemas

api = Blueprint("orders", __name__, url_prefix="/api/orders/v1",
                description="The product catalog, domain validation and certificate orders")


def _uow() -> UnitOfWork:
    return current_service().uow()


# --- products --------------------------------------------------------------------------


@api.route("/products")
@api.response(200, schemas.ProductPage)
def list_products() -> dict[str, Any]:
    """The certificate products on sale, with their prices per term in cents."""
    current_principal()
    with _uow() as uow:
        return {"items": handlers.list_products(uow), "next_cursor": None}


# --- domains ---------------------------------------------------------------------------


@api.route("/domains", methods=["POST"])
@api.arguments(schemas.NewDomainSchema)
@api.response(201, schemas.DomainSchema)
def submit_domain(body: dict[str, Any]) -> Any:
    """Submit a domain for validation; the answer says what to publish to prove control."""
    principal = require(Permission.MANAGE_DOMAINS)
    with _uow() as uow:
        return handlers.submit_domain(uow, principal, request_context(principal),
                                      body["name"], body["method"])


@api.route("/domains")
@api.arguments(schemas.DomainListArgs, location="query")
@api.response(200, schemas.DomainPage)
def list_domains(args: dict[str, Any]) -> dict[str, Any]:
    """The account's domains, newest first. The platform operator sees every account's
    (filter with ``status=pending`` to find those waiting for manual validation)."""
    principal = require(Permission.READ_DOMAINS)
    with _uow() as uow:
        items, next_cursor = handlers.list_domains(
            uow, principal, status=args.get("status"), name=args.get("name"),
            limit=args["limit"], cursor=args["cursor"])
        return {"items": items, "next_cursor": next_cursor}


@api.route("/domains/<domain_id>")
@api.response(200, schemas.DomainSchema)
def get_domain(domain_id: str) -> Any:
    principal = require(Permission.READ_DOMAINS)
    with _uow() as uow:
        return handlers.get_domain(uow, principal, domain_id)


@api.route("/domains/<domain_id>/approve", methods=["POST"])
@api.arguments(schemas.DomainApprovalSchema)
@api.response(200, schemas.DomainSchema)
def approve_domain(body: dict[str, Any], domain_id: str) -> Any:
    """Manual validation by the CA's staff (platform operator), with its evidence: what
    was checked and where the proof is (``checked``, ``reference``, optionally
    ``document_sha256``), kept as an attempt (``GET /domains/{id}/attempts``). It counts
    for private products only: public ones (dv, ov, ev) need a BR 3.2.2.4 method (dns-txt,
    http-file). 409 while the domain is validated."""
    principal = require(Permission.VALIDATE_DOMAINS)
    with _uow() as uow:
        return handlers.approve_domain(uow, principal, request_context(principal), domain_id,
                                       schemas.DomainApprovalSchema().evidence(body))


# --- orders ----------------------------------------------------------------------------


@api.route("/orders", methods=["POST"])
@idempotent  # api.md: a retried submission must not order (and charge) twice
@api.arguments(schemas.NewOrderSchema)
@api.response(201, schemas.OrderSchema)
def submit_order(body: dict[str, Any]) -> Any:
    """Request a certificate. Approved at once when the requester may approve it and every
    name is covered by a validated domain; otherwise it waits for an approver. A key that
    must never be certified (weak, or reported compromised) is a 422 ``key_blocked``
    naming the ``rule``."""
    principal = require(Permission.REQUEST_CERTIFICATES)
    new = handlers.NewOrder(
        product=body["product"], term_years=body["term_years"],
        server_type=body["server_type"], common_name=body["common_name"],
        sans=tuple(body["sans"]), csr=body["csr"], unit_id=body.get("unit_id"),
        notes=body.get("notes"), organization_id=body.get("organization_id"),
        submission_key=request.headers.get(IDEMPOTENCY_HEADER))
    with _uow() as uow:
        return handlers.submit_order(uow, principal, request_context(principal), new)


@api.route("/orders")
@api.arguments(inventory.InventoryArgs, location="query")
@api.response(200, schemas.OrderPage)
def list_orders(args: dict[str, Any]) -> dict[str, Any]:
    """The inventory: the orders the caller may see, newest first, filtered by status (a
    comma list), unit, requester, name (part of the common name or of any SAN), product,
    and the current certificate's validity (``expiring_before``, ``issued_after``,
    ``issued_before``, RFC 3339). ``GET /orders.csv`` exports the same search."""
    principal = require(Permission.READ_ORDERS)
    with _uow() as uow:
        items, next_cursor = inventory.search(uow, principal,
                                              inventory.InventoryFilter.from_args(args),
                                              limit=args["limit"], cursor=args["cursor"])
        return {"items": items, "next_cursor": next_cursor}


@api.route("/orders/<order_id>")
@api.response(200, schemas.OrderSchema)
def get_order(order_id: str) -> Any:
    principal = require(Permission.READ_ORDERS)
    with _uow() as uow:
        return handlers.get_order(uow, principal, order_id)


@api.route("/orders/<order_id>/approve", methods=["POST"])
@api.arguments(schemas.ApprovalSchema)
@api.response(200, schemas.OrderSchema)
def approve_order(body: dict[str, Any], order_id: str) -> Any:
    """Approve a pending order (422 ``domain_not_validated`` names the domains to submit)."""
    principal = require(Permission.APPROVE_ORDERS)
    with _uow() as uow:
        return handlers.approve_order(uow, principal, request_context(principal), order_id,
                                      body.get("note"))


@api.route("/orders/<order_id>/reject", methods=["POST"])
@api.arguments(schemas.RejectionSchema)
@api.response(200, schemas.OrderSchema)
def reject_order(body: dict[str, Any], order_id: str) -> Any:
    principal = require(Permission.APPROVE_ORDERS)
    with _uow() as uow:
        return handlers.reject_order(uow, principal, request_context(principal), order_id,
                                     body["reason"])


@api.route("/orders/<order_id>/cancel", methods=["POST"])
@api.arguments(schemas.CancellationSchema)
@api.response(200, schemas.OrderSchema)
def cancel_order(body: dict[str, Any], order_id: str) -> Any:
    """Withdraw an order before it is being issued (requester or approver)."""
    principal = require(Permission.REQUEST_CERTIFICATES)
    with _uow() as uow:
        return handlers.cancel_order(uow, principal, request_context(principal), order_id,
                                     body.get("reason"))


@api.route("/orders/<order_id>/certificate")
@api.arguments(schemas.CertificateArgs, location="query")
@api.doc(responses={200: {"description": "the certificate: PEM (application/x-pem-file), "
                                         "DER (application/pkix-cert) or PKCS#7 "
                                         "(application/pkcs7-mime)"},
                    409: {"description": "the order has no certificate yet"}})
def download_certificate(args: dict[str, Any], order_id: str) -> Response:
    """Download the issued certificate: ``pem``, ``pem-chain`` (with the issuing CA),
    ``der`` or ``p7b``."""
    principal = require(Permission.DOWNLOAD_CERTIFICATES)
    with _uow() as uow:
        download = handlers.certificate_download(uow, principal, order_id, args["format"])
    response = Response(download.body, mimetype=download.mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{download.filename}"'
    return response
