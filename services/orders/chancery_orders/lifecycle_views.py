"""orders' HTTP entrypoints for an order's life around issuance: editing before approval,
reissue, revocation, refund, assignment and renewal."""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import require
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from flask_smorest import Blueprint

from chancery_orders import handlers, lifecycle, schemas

api = Blueprint("order-lifecycle", __name__, url_prefix="/api/orders/v1",
                description="Editing, reissuing, revoking, refunding, assigning and renewing "
                            "certificate orders")

CONFLICT = {409: {"description": "the order's status forbids it (``code`` says why)"}}


@api.route("/orders/<order_id>", methods=["PATCH"])
@api.arguments(schemas.EditOrderSchema)
@api.response(200, schemas.OrderSchema)
@api.doc(responses=CONFLICT)
def edit_order(body: dict[str, Any], order_id: str) -> Any:
    """Edit any detail of an order pending approval (its approvers). The result is
    checked like a new request (422 naming each field), the price follows, and the diff
    is kept in the order's history."""
    principal = require(Permission.APPROVE_ORDERS)
    with current_service().uow() as uow:
        return handlers.edit_order(uow, principal, request_context(principal), order_id, body)


@api.route("/orders/<order_id>/reissue", methods=["POST"])
@api.arguments(schemas.ReissueSchema)
@api.response(200, schemas.OrderSchema)
@api.doc(responses=CONFLICT)
def reissue_order(body: dict[str, Any], order_id: str) -> Any:
    """A new certificate for an issued order, at no charge: a new CSR and/or names (422
    ``domain_not_validated`` for names no validated domain covers). The order stays
    issued with ``reissue_pending`` until the new certificate replaces the current one,
    which is then revoked as superseded unless ``revoke_previous`` is false."""
    principal = require(Permission.REISSUE_CERTIFICATES)
    service = current_service()
    request = lifecycle.ReissueRequest(
        csr=body["csr"], sans=tuple(body["sans"]) if body["sans"] is not None else None,
        revoke_previous=body["revoke_previous"])
    with service.uow() as uow:
        return lifecycle.reissue_order(uow, principal, request_context(principal), order_id,
                                       request, service.clock())


@api.route("/orders/<order_id>/revoke", methods=["POST"])
@api.arguments(schemas.RevocationSchema)
@api.response(200, schemas.OrderSchema)
@api.doc(responses=CONFLICT)
def revoke_order(body: dict[str, Any], order_id: str) -> Any:
    """Revoke an issued order's certificates with an RFC 5280 reason (requester, assignee
    or approver); the order ends ``revoked``."""
    principal = require(Permission.REISSUE_CERTIFICATES)
    service = current_service()
    with service.uow() as uow:
        return lifecycle.revoke_order(uow, principal, request_context(principal), order_id,
                                      body["reason"], service.clock())


@api.route("/orders/<order_id>/refund", methods=["POST"])
@api.arguments(schemas.RefundSchema)
@api.response(200, schemas.OrderSchema)
@api.doc(responses={409: {"description": "not issued, or ``refund_window_closed`` (more "
                                         "than 30 days after issuance)"}})
def refund_order(body: dict[str, Any], order_id: str) -> Any:
    """Refund and revoke an order within 30 days of its issuance (its approvers): the
    certificates are revoked and ledger returns the price to the available balance."""
    principal = require(Permission.APPROVE_ORDERS)
    service = current_service()
    with service.uow() as uow:
        return lifecycle.refund_order(uow, principal, request_context(principal), order_id,
                                      body["reason"], body.get("note"), service.clock())


@api.route("/orders/<order_id>/assignees", methods=["PUT"])
@api.arguments(schemas.AssigneesSchema)
@api.response(200, schemas.OrderSchema)
def set_assignees(body: dict[str, Any], order_id: str) -> Any:
    """Who else may see, download and reissue the order (active users of the account)."""
    principal = require(Permission.ASSIGN_CERTIFICATES)
    with current_service().uow() as uow:
        return lifecycle.set_assignees(uow, principal, request_context(principal), order_id,
                                       body["user_ids"])


@api.route("/orders/<order_id>/renew", methods=["POST"])
@api.arguments(schemas.RenewalSchema)
@api.response(201, schemas.OrderSchema)
@api.doc(responses=CONFLICT)
def renew_order(body: dict[str, Any], order_id: str) -> Any:
    """A new order pre-filled from an issued or expired one (same product, term, server
    type, names, unit and notes) with a new CSR; it is approved and paid like any order."""
    principal = require(Permission.REQUEST_CERTIFICATES)
    with current_service().uow() as uow:
        return lifecycle.renew_order(uow, principal, request_context(principal), order_id,
                                     body["csr"], body.get("notes"))
