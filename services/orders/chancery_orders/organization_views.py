"""HTTP entrypoints for organizations (OV and EV certificates): submit, read, validate."""

from __future__ import annotations

from typing import Any

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import require
from chancery_shared.messaging.unit_of_work import UnitOfWork
from chancery_shared.service import current_service
from chancery_shared.web.app import request_context
from chancery_shared.web.pagination import PageArgs
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from chancery_orders import organizations
from chancery_orders.schemas import EvidenceSchema, Person, Rfc3339

api = Blueprint("organizations", __name__, url_prefix="/api/orders/v1",
                description="Organizations named in OV and EV certificates")

# Named in 403 answers (shared's permission table has no organization rows yet)


class NewOrganizationSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=64),
                         metadata={"description": "the legal name (subject O)"})
    country = fields.String(required=True, validate=validate.Length(equal=2),
                            metadata={"description": "ISO 3166-1 alpha-2 (subject C)"})
    state_or_province = fields.String(required=True, validate=validate.Length(min=1, max=128))
    locality = fields.String(required=True, validate=validate.Length(min=1, max=128))
    street_address = fields.String(allow_none=True, load_default=None,
                                   validate=validate.Length(max=128))
    postal_code = fields.String(allow_none=True, load_default=None,
                                validate=validate.Length(max=40))


class OrganizationListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(organizations.STATUSES))


class OrganizationApprovalSchema(EvidenceSchema):
    """The operator's validation of an organization, with its evidence (BR 3.2.2.1)."""

    source = fields.String(required=True, validate=validate.OneOf(organizations.SOURCES),
                           metadata={"description": "where identity and address were "
                                                    "verified (BR 3.2.2.1): "
                                     + "; ".join(f"{key}: {text}" for key, text
                                                 in organizations.SOURCES.items())})


class OrganizationAttemptSchema(Schema):
    """Evidence of one validation of an organization."""

    id = fields.String()
    source = fields.String(metadata={"description": "BR 3.2.2.1 source (empty when "
                                                    "migrated)"})
    checked = fields.String(metadata={"description": "what was checked"})
    reference = fields.String(metadata={"description": "where the proof is (URL, ticket, "
                                                       "document)"})
    document_sha256 = fields.String(allow_none=True)
    validated = fields.Boolean()
    validated_until = Rfc3339(allow_none=True)
    checked_by = fields.Method("_checked_by")
    migrated = fields.Boolean(metadata={
        "description": "true: written from a validation made before evidence was kept "
                       "(no structured evidence)"})
    checked_at = Rfc3339(attribute="created_at")

    def _checked_by(self, attempt: Any) -> dict[str, Any]:
        return Person().dump({"id": attempt.checked_by_id, "name": attempt.checked_by_name})


class OrganizationAttemptPage(Schema):
    items = fields.List(fields.Nested(OrganizationAttemptSchema))
    next_cursor = fields.String(allow_none=True)


class OrganizationSchema(Schema):
    id = fields.String()
    account_id = fields.String()
    name = fields.String()
    country = fields.String()
    state_or_province = fields.String()
    locality = fields.String()
    street_address = fields.String(allow_none=True)
    postal_code = fields.String(allow_none=True)
    status = fields.String(attribute="current_status",
                           metadata={"description": "pending, validated or expired"})
    validated_at = Rfc3339(allow_none=True)
    reusable_until = Rfc3339(allow_none=True, metadata={
        "description": "the first moment this validation can no longer back a "
                       "certificate: the reuse period of BR 4.2.1 (organization data: "
                       "398 days, counted "
                       "at the signing day), so it shortens when the schedule "
                       "steps down"})
    validated_until = Rfc3339(allow_none=True, metadata={
        "description": "the same instant as reusable_until (its older name)"})
    validated_by = fields.Method("_validated_by", allow_none=True)
    validation_note = fields.String(allow_none=True)
    submitted_by = fields.Method("_submitted_by")
    created_at = Rfc3339()

    def _validated_by(self, organization: Any) -> dict[str, Any] | None:
        if organization.validated_at is None:
            return None
        return Person().dump({"id": organization.validated_by_id,
                              "name": organization.validated_by_name})

    def _submitted_by(self, organization: Any) -> dict[str, Any]:
        return Person().dump({"id": organization.submitted_by_id,
                              "name": organization.submitted_by_name})


class OrganizationPage(Schema):
    items = fields.List(fields.Nested(OrganizationSchema))
    next_cursor = fields.String(allow_none=True)


def _uow() -> UnitOfWork:
    return current_service().uow()


@api.route("/organizations", methods=["POST"])
@api.arguments(NewOrganizationSchema)
@api.response(201, OrganizationSchema)
def submit_organization(body: dict[str, Any]) -> Any:
    """Submit the account's organization; the platform operator validates it."""
    principal = require(Permission.MANAGE_ORGANIZATIONS)
    with _uow() as uow:
        return organizations.submit_organization(uow, principal, request_context(principal),
                                                 body)


@api.route("/organizations")
@api.arguments(OrganizationListArgs, location="query")
@api.response(200, OrganizationPage)
def list_organizations(args: dict[str, Any]) -> dict[str, Any]:
    """The account's organizations, newest first (the operator sees every account's)."""
    principal = require(Permission.READ_ORGANIZATIONS)
    with _uow() as uow:
        items, next_cursor = organizations.list_organizations(
            uow, principal, status=args.get("status"), limit=args["limit"],
            cursor=args["cursor"])
        return {"items": items, "next_cursor": next_cursor}


@api.route("/organizations/<organization_id>")
@api.response(200, OrganizationSchema)
def get_organization(organization_id: str) -> Any:
    principal = require(Permission.READ_ORGANIZATIONS)
    with _uow() as uow:
        return organizations.get_organization(uow, principal, organization_id)


@api.route("/organizations/<organization_id>/approve", methods=["POST"])
@api.arguments(OrganizationApprovalSchema)
@api.response(200, OrganizationSchema)
def approve_organization(body: dict[str, Any], organization_id: str) -> Any:
    """Validation by the CA's staff (platform operator) for the reuse period, with its
    evidence: the BR 3.2.2.1 ``source``, what was ``checked``, a ``reference`` to the proof
    (optionally its ``document_sha256``), kept as an attempt
    (``GET /organizations/{id}/attempts``). 409 while the organization is validated."""
    principal = require(Permission.VALIDATE_ORGANIZATIONS)
    with _uow() as uow:
        return organizations.approve_organization(
            uow, principal, request_context(principal), organization_id, body["source"],
            OrganizationApprovalSchema().evidence(body))


@api.route("/organizations/<organization_id>/attempts")
@api.response(200, OrganizationAttemptPage)
def list_organization_attempts(organization_id: str) -> dict[str, Any]:
    """The evidence: the organization's last 20 validations, newest first."""
    principal = require(Permission.READ_ORGANIZATIONS)
    with _uow() as uow:
        return {"items": organizations.list_attempts(uow, principal, organization_id),
                "next_cursor": None}
