"""orders' HTTP entrypoints for automated domain validation and its evidence."""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import require
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from flask_smorest import Blueprint

from chancery_orders import schemas, validation

api = Blueprint("domain-validation", __name__, url_prefix="/api/orders/v1",
                description="Checking domains by DNS TXT record or HTTP file, and the "
                            "evidence of every attempt")


@api.route("/domains/<domain_id>/check", methods=["POST"])
@api.response(200, schemas.DomainCheckSchema)
def check_domain(domain_id: str) -> Any:
    """Look for the domain's token now, by its method. 200 with the domain (its new
    status) and ``last_attempt``, the evidence of this check; a found token is spent and
    the answer's ``token``/``instructions`` show the value for the next validation."""
    principal = require(Permission.MANAGE_DOMAINS)
    service = current_service()
    return validation.check_domain_now(service.uow, service.domain_validation, principal,
                                       request_context(principal), domain_id,
                                       service.clock())


@api.route("/domains/<domain_id>/attempts")
@api.response(200, schemas.ValidationAttemptPage)
def list_attempts(domain_id: str) -> dict[str, Any]:
    """The evidence: the domain's last 20 validation attempts, newest first."""
    principal = require(Permission.READ_DOMAINS)
    with current_service().uow() as uow:
        return {"items": validation.list_attempts(uow, principal, domain_id),
                "next_cursor": None}
