"""orders' HTTP input and output schemas (they generate the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from chancery_shared.messaging.envelope import isoformat
from chancery_shared.web.pagination import PageArgs
from marshmallow import Schema, fields, validate

from chancery_orders.csrs import MAX_CSR_BYTES
from chancery_orders.model import (
    DOMAIN_METHODS,
    DOMAIN_STATUSES,
    REVOCATION_REASONS,
    SERVER_TYPES,
    ManualEvidence,
)

MAX_NAMES_IN_REQUEST = 500


class Rfc3339(fields.DateTime):
    """RFC 3339 UTC with a ``Z``, as everywhere in the API."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else isoformat(value)


class Person(Schema):
    id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)


# --- products --------------------------------------------------------------------------


class ProductSchema(Schema):
    code = fields.String()
    name = fields.String()
    validation_level = fields.String(metadata={"description": "dv, ov, ev or private"})
    max_sans = fields.Integer(metadata={"description": "most names in one certificate, the "
                                                       "common name included"})
    wildcard = fields.Boolean(metadata={"description": "whether *.name is allowed"})
    prices_cents = fields.Dict(keys=fields.String(), values=fields.Integer(),
                               metadata={"description": "price per term; keys are years"})
    included_sans = fields.Integer(metadata={"description": "names included in the price"})
    extra_san_prices_cents = fields.Dict(
        keys=fields.String(), values=fields.Integer(), allow_none=True,
        metadata={"description": "price of each name beyond included_sans, per term"})


class ProductPage(Schema):
    items = fields.List(fields.Nested(ProductSchema))
    next_cursor = fields.String(allow_none=True)


# --- domains ---------------------------------------------------------------------------


class NewDomainSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    method = fields.String(required=True, validate=validate.OneOf(DOMAIN_METHODS))


class DomainListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(DOMAIN_STATUSES))
    name = fields.String(validate=validate.Length(min=1, max=300),
                         metadata={"description": "part of the domain name"})


_SOME_TEXT = validate.Regexp(r"[\s\S]*\S", error="must not be blank")


class EvidenceSchema(Schema):
    """What a person checked and where the proof is (every validation by review)."""

    checked = fields.String(required=True, validate=[validate.Length(min=1, max=2000),
                                                     _SOME_TEXT], metadata={
        "description": "what was checked, in words (e.g. \"WHOIS registrant is the "
                       "account's company; confirmed by phone with the registrant\")"})
    reference = fields.String(required=True, validate=[validate.Length(min=1, max=500),
                                                       _SOME_TEXT], metadata={
        "description": "where the proof is kept: a URL, a ticket number or a document "
                       "reference"})
    document_sha256 = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        r"^[0-9a-fA-F]{64}$", error="must be a SHA-256 digest: 64 hexadecimal characters"),
        metadata={"description": "optional: the SHA-256 of the document the reference "
                                 "names, so the record proves which bytes were reviewed"})

    def evidence(self, body: dict[str, Any]) -> ManualEvidence:
        digest = body.get("document_sha256")
        return ManualEvidence(checked=body["checked"].strip(),
                              reference=body["reference"].strip(),
                              document_sha256=digest.lower() if digest else None)


class DomainApprovalSchema(EvidenceSchema):
    """A manual validation: for private products only (never public: BR 3.2.2.4)."""


class ValidationScopeSchema(Schema):
    """What the domain's current validation covers (model.VALIDATION_METHODS)."""

    method = fields.String(attribute="code")
    title = fields.String()
    br_section = fields.String(allow_none=True, metadata={
        "description": "the BR 3.2.2.4 method; null for a manual review"})
    subdomains = fields.Boolean(metadata={"description": "covers names under the domain"})
    wildcards = fields.Boolean(metadata={"description": "covers *. names under the domain"})
    public = fields.Boolean(metadata={
        "description": "counts for publicly trusted products (dv, ov, ev); false: private "
                       "products only"})


class DomainSchema(Schema):
    id = fields.String()
    account_id = fields.String()
    name = fields.String()
    status = fields.String(attribute="current_status",
                           metadata={"description": "pending, validated, failed or expired"})
    method = fields.String()
    token = fields.String(metadata={"description": "the random value to publish"})
    instructions = fields.Dict()
    validated_at = Rfc3339(allow_none=True)
    reusable_until = Rfc3339(allow_none=True, metadata={
        "description": "the first moment this validation can no longer back a "
                       "certificate: the reuse period of BR 4.2.1 (counted "
                       "at the signing day), so it shortens when the schedule "
                       "steps down"})
    validated_until = Rfc3339(allow_none=True, metadata={
        "description": "the same instant as reusable_until (its older name)"})
    validated_by = fields.Method("_validated_by", allow_none=True)
    validation_note = fields.String(allow_none=True)
    validated_with = fields.String(allow_none=True, metadata={
        "description": "dns-txt, http-file or manual: decides which names it covers"})
    coverage = fields.Nested(ValidationScopeSchema, attribute="validation_method",
                             allow_none=True, metadata={
        "description": "what the current validation covers (null before one)"})
    created_at = Rfc3339()

    def _validated_by(self, domain: Any) -> dict[str, Any] | None:
        if domain.validated_at is None:
            return None
        return {"id": domain.validated_by_id, "name": domain.validated_by_name}


class DomainPage(Schema):
    items = fields.List(fields.Nested(DomainSchema))
    next_cursor = fields.String(allow_none=True)


class ValidationAttemptSchema(Schema):
    """Evidence of one validation attempt (domain_validation_attempts)."""

    id = fields.String()
    method = fields.String()
    token = fields.String(metadata={"description": "the value looked for"})
    queried = fields.String(metadata={"description": "the DNS names or URLs asked, in order"})
    vantage = fields.String(metadata={"description": "from where: resolver or connect "
                                                     "address, and the checking host"})
    answer = fields.String(metadata={"description": "what came back (at most 4 KiB)"})
    outcome = fields.String(metadata={"description": "validated, or failed: the reason"})
    validated = fields.Boolean()
    trigger = fields.String(metadata={"description": "on_demand, scheduled or "
                                                     "manual_review"})
    requested_by_name = fields.String(allow_none=True)
    requested_by = fields.Method("_requested_by", metadata={
        "description": "who asked for the check or made the review"})
    checked = fields.String(allow_none=True, metadata={
        "description": "manual review: what was checked"})
    reference = fields.String(allow_none=True, metadata={
        "description": "manual review: where the proof is (URL, ticket, document)"})
    document_sha256 = fields.String(allow_none=True, metadata={
        "description": "manual review: the SHA-256 of the reviewed document, if given"})
    migrated = fields.Boolean(metadata={
        "description": "true: written from a validation made before evidence was kept "
                       "(no structured evidence)"})
    attempted_at = Rfc3339(attribute="created_at")

    def _requested_by(self, attempt: Any) -> dict[str, Any]:
        return {"id": attempt.requested_by_id, "name": attempt.requested_by_name}


class DomainCheckSchema(DomainSchema):
    last_attempt = fields.Nested(ValidationAttemptSchema)


class ValidationAttemptPage(Schema):
    items = fields.List(fields.Nested(ValidationAttemptSchema))
    next_cursor = fields.String(allow_none=True)


# --- orders ----------------------------------------------------------------------------


class NewOrderSchema(Schema):
    product = fields.String(required=True, validate=validate.Length(min=1, max=64))
    term_years = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=3))
    server_type = fields.String(required=True, validate=validate.OneOf(SERVER_TYPES))
    common_name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    sans = fields.List(fields.String(validate=validate.Length(min=1, max=300)),
                       load_default=list, validate=validate.Length(max=MAX_NAMES_IN_REQUEST),
                       metadata={"description": "every name; the common name is added "
                                                "when missing, duplicates are dropped"})
    csr = fields.String(required=True, validate=validate.Length(min=1, max=MAX_CSR_BYTES),
                        metadata={"description": "PEM certificate signing request"})
    unit_id = fields.String(allow_none=True, load_default=None,
                            metadata={"description": "default: the requester's only unit"})
    notes = fields.String(allow_none=True, load_default=None,
                          validate=validate.Length(max=2000))
    organization_id = fields.String(allow_none=True, load_default=None, metadata={
        "description": "OV and EV products: the account's validated organization the "
                       "certificate names; refused on DV products"})


class EditOrderSchema(Schema):
    """Any detail of a pending order; what is left out stays as it is."""

    product = fields.String(validate=validate.Length(min=1, max=64))
    term_years = fields.Integer(strict=True, validate=validate.Range(min=1, max=3))
    server_type = fields.String(validate=validate.OneOf(SERVER_TYPES))
    common_name = fields.String(validate=validate.Length(min=1, max=300))
    sans = fields.List(fields.String(validate=validate.Length(min=1, max=300)),
                       validate=validate.Length(max=MAX_NAMES_IN_REQUEST),
                       metadata={"description": "every name (replaces the list); the common "
                                                "name is added when missing"})
    csr = fields.String(validate=validate.Length(min=1, max=MAX_CSR_BYTES))
    unit_id = fields.String(validate=validate.Length(min=1, max=36))
    notes = fields.String(allow_none=True, validate=validate.Length(max=2000))
    organization_id = fields.String(allow_none=True, validate=validate.Length(min=1, max=36),
                                    metadata={"description": "null when moving to a DV "
                                                             "product"})


class ReissueSchema(Schema):
    csr = fields.String(required=True, validate=validate.Length(min=1, max=MAX_CSR_BYTES),
                        metadata={"description": "PEM CSR for the new certificate (a new key "
                                                 "is recommended)"})
    sans = fields.List(fields.String(validate=validate.Length(min=1, max=300)),
                       load_default=None, validate=validate.Length(max=MAX_NAMES_IN_REQUEST),
                       metadata={"description": "the new names (the common name is kept); "
                                                "default: the same names"})
    revoke_previous = fields.Boolean(load_default=True, metadata={
        "description": "revoke the current certificate (reason superseded) once the new "
                       "one is issued"})


class RevocationSchema(Schema):
    reason = fields.String(required=True, validate=validate.OneOf(REVOCATION_REASONS),
                           metadata={"description": "RFC 5280 reason: "
                                                    + ", ".join(REVOCATION_REASONS)})


class RefundSchema(Schema):
    reason = fields.String(load_default="cessation_of_operation",
                           validate=validate.OneOf(REVOCATION_REASONS),
                           metadata={"description": "the revocation reason (RFC 5280)"})
    note = fields.String(load_default=None, allow_none=True,
                         validate=validate.Length(max=2000),
                         metadata={"description": "why the order is refunded"})


class AssigneesSchema(Schema):
    user_ids = fields.List(fields.String(validate=validate.Length(min=1, max=36)),
                           required=True, validate=validate.Length(max=100),
                           metadata={"description": "every assignee (replaces the list; "
                                                    "empty removes them all)"})


class RenewalSchema(Schema):
    csr = fields.String(required=True, validate=validate.Length(min=1, max=MAX_CSR_BYTES),
                        metadata={"description": "PEM CSR for the renewed certificate"})
    notes = fields.String(load_default=None, allow_none=True,
                          validate=validate.Length(max=2000),
                          metadata={"description": "default: the renewed order's notes"})


class ApprovalSchema(Schema):
    note = fields.String(validate=validate.Length(max=2000), load_default=None,
                         allow_none=True)


class RejectionSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class CancellationSchema(Schema):
    reason = fields.String(validate=validate.Length(max=2000), load_default=None,
                           allow_none=True)


class CertificateArgs(Schema):
    format = fields.String(load_default=None,
                           validate=validate.OneOf(("pem", "pem-chain", "der", "p7b")),
                           metadata={"description": "default: the order's server type's "
                                                    "(see downloads.py)"})


class CertificateSummary(Schema):
    serial = fields.String()
    not_before = Rfc3339()
    not_after = Rfc3339()
    status = fields.String()


class CertificateRecord(CertificateSummary):
    """Every certificate the order has had, the current one first."""

    issuer_id = fields.String()
    current = fields.Boolean(dump_only=True)
    revocation_reason = fields.String(allow_none=True)
    revoked_at = Rfc3339(allow_none=True)


class Plan(Schema):
    ends_at = Rfc3339()
    certificates = fields.Integer(metadata={"description": "certificates issued so far"})


class HistoryEntry(Schema):
    at = Rfc3339()
    actor = fields.Nested(Person)
    action = fields.String()
    details = fields.Dict()


class OrderSchema(Schema):
    id = fields.String()
    status = fields.String()
    product = fields.String(attribute="product_code")
    term_years = fields.Integer()
    server_type = fields.String()
    common_name = fields.String()
    sans = fields.List(fields.String())
    notes = fields.String(allow_none=True)
    requester = fields.Nested(Person)
    unit = fields.Nested(Person, allow_none=True)
    price_cents = fields.Integer()
    key_type = fields.String(attribute="key_description")
    failure_reason = fields.String(allow_none=True)
    created_at = Rfc3339()
    updated_at = Rfc3339()
    certificate = fields.Nested(CertificateSummary, allow_none=True)
    certificates = fields.Method("_certificates", metadata={
        "description": "every certificate of the order, the current one first (see "
                       "CertificateRecord)"})
    reissue_pending = fields.Boolean()
    plan_ends_at = Rfc3339(allow_none=True, metadata={
        "description": "the end of the term paid for; no certificate outlasts it"})
    plan = fields.Nested(Plan, allow_none=True, metadata={
        "description": "set when the term needs several certificates (reissued "
                       "automatically before each expires)"})
    assignees = fields.List(fields.Nested(Person))
    renewal_of = fields.String(allow_none=True)
    organization_id = fields.String(allow_none=True)
    revocation_reason = fields.String(allow_none=True)
    revoked_at = Rfc3339(allow_none=True)
    refunded_cents = fields.Integer(allow_none=True)
    history = fields.List(fields.Nested(HistoryEntry))


    def _certificates(self, order: Any) -> list[dict[str, Any]]:
        records = CertificateRecord(many=True).dump(order.certificates)
        for position, record in enumerate(records):
            record["current"] = position == 0
        return records


class OrderPage(Schema):
    items = fields.List(fields.Nested(OrderSchema))
    next_cursor = fields.String(allow_none=True)
