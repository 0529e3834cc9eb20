"""The event catalogue: one marshmallow schema per ``(type, schema_version)``.

These payloads are a public contract (internal systems subscribe to them), so they
live here, beside the envelope, and both the producer and every consumer validate
against them. Changes are additive: a field is added to a schema, never renamed or
removed; a breaking change is a new ``schema_version`` registered beside the old one.
Unknown fields are accepted so that an older consumer survives a newer producer.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, fields, validate

_REGISTRY: dict[tuple[str, int], Schema] = {}
COMMANDS = frozenset({"ca_signer.certificate.sign", "ca_signer.certificate.revoke"})


class Payload(Schema):
    class Meta:
        unknown = INCLUDE


def register(type_: str, version: int = 1):
    """Class decorator: the payload schema of ``type_`` at ``version``."""

    def wrap(cls: type[Schema]) -> type[Schema]:
        _REGISTRY[(type_, version)] = cls()
        return cls

    return wrap


def register_many(types: list[str], cls: type[Schema], version: int = 1) -> None:
    for type_ in types:
        _REGISTRY[(type_, version)] = cls()


def known_types() -> list[str]:
    return sorted({type_ for type_, _ in _REGISTRY})


def validate_data(type_: str, version: int, data: Any) -> dict[str, Any] | list[str]:
    schema = _REGISTRY.get((type_, version))
    if schema is None:
        return [f"unknown message type {type_} version {version}"]
    return schema.validate(data)


Id = fields.String
Cents = lambda **kw: fields.Integer(validate=validate.Range(min=0), **kw)  # noqa: E731
Time = fields.String  # RFC 3339 text, kept verbatim on the wire

# --- identity ------------------------------------------------------------------------


@register("identity.account.created")
class AccountCreated(Payload):
    name = fields.String(required=True)


class UserChanged(Payload):
    user_id = Id(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True)
    unit_ids = fields.List(Id(), required=True)
    active = fields.Boolean()
    changes = fields.Dict()  # updated/deactivated: {field: [old, new]}


register_many(["identity.user.created", "identity.user.updated", "identity.user.deactivated"],
              UserChanged)


class UserSecurityEvent(Payload):
    """A user's credentials or lock changed (password changed, unlocked by an admin)."""

    user_id = Id(required=True)
    email = fields.String(required=True)
    unit_ids = fields.List(Id())
    sessions_ended = fields.Integer()


register_many(["identity.user.password_changed", "identity.user.unlocked"], UserSecurityEvent)


class UnitChanged(Payload):
    unit_id = Id(required=True)
    name = fields.String(required=True)


register_many(["identity.unit.created", "identity.unit.updated"], UnitChanged)


class SessionEvent(Payload):
    user_id = Id(allow_none=True)
    email = fields.String(allow_none=True)
    method = fields.String(required=True)
    reason = fields.String(allow_none=True)
    session_id = Id(allow_none=True)
    unit_ids = fields.List(Id())
    locked_until = Time(allow_none=True)  # login.failed: this failure locked the user


register_many(["identity.session.created", "identity.login.failed",
               "identity.session.ended"], SessionEvent)


@register("identity.signing_key.rotated")
class SigningKeyRotated(Payload):
    """A new access-token signing key was published; it signs from ``activates_at``."""

    kid = fields.String(required=True)
    previous_kid = fields.String(allow_none=True)
    activates_at = Time(required=True)


class ApiKeyChanged(Payload):
    key_id = Id(required=True)
    name = fields.String(required=True)


register_many(["identity.api_key.created", "identity.api_key.revoked"], ApiKeyChanged)

# --- orders --------------------------------------------------------------------------


class DomainChanged(Payload):
    domain_id = Id(required=True)
    name = fields.String(required=True)
    method = fields.String(required=True)
    validated_until = Time(allow_none=True)


register_many(["orders.domain.submitted", "orders.domain.validated", "orders.domain.failed",
               "orders.domain.expired"], DomainChanged)


class OrganizationChanged(Payload):
    organization_id = Id(required=True)
    name = fields.String(required=True)
    country = fields.String(required=True)
    state_or_province = fields.String(required=True)
    locality = fields.String(required=True)
    validated_until = Time(allow_none=True)


register_many(["orders.organization.submitted", "orders.organization.validated"],
              OrganizationChanged)


@register("orders.order.submitted")
class OrderSubmitted(Payload):
    order_id = Id(required=True)
    status = fields.String(required=True)
    product = fields.String(required=True)
    term_years = fields.Integer(required=True)
    server_type = fields.String(allow_none=True)
    common_name = fields.String(required=True)
    sans = fields.List(fields.String(), required=True)
    unit_id = Id(allow_none=True)
    requester_id = Id(required=True)
    price_cents = Cents(required=True)
    renewal_of = Id(allow_none=True)  # the order this one renews


@register("orders.order.edited")
class OrderEdited(Payload):
    order_id = Id(required=True)
    changes = fields.Dict(required=True)


@register("orders.order.approved")
class OrderApproved(Payload):
    order_id = Id(required=True)
    price_cents = Cents(required=True)
    unit_id = Id(allow_none=True)
    product = fields.String()


class OrderClosed(Payload):
    order_id = Id(required=True)
    reason = fields.String(allow_none=True)


register_many(["orders.order.rejected", "orders.order.cancelled"], OrderClosed)


class OrderOutcome(Payload):
    order_id = Id(required=True)
    serial = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)


register_many(["orders.order.issued", "orders.order.failed"], OrderOutcome)


@register("orders.order.awaiting_funds")
class OrderAwaitingFunds(Payload):
    """An approved order waits: ledger declined to reserve its price (for now)."""

    order_id = Id(required=True)
    price_cents = Cents(required=True)
    available_cents = Cents(allow_none=True)


@register("orders.order.awaiting_validation")
class OrderAwaitingValidation(Payload):
    """A paid order waits: the validation behind ``names`` (or the organization) is too
    old to back a certificate signed now (BR 4.2.1); the money stays held."""

    order_id = Id(required=True)
    reason = fields.String(required=True)
    names = fields.List(fields.String(), required=True)
    organization = fields.Boolean(required=True)


@register("orders.order.validation_needed")
class OrderValidationNeeded(Payload):
    """A plan's next reissue (at ``reissue_at``) would find no validation reusable that
    day for ``names``: the account is told ahead, once per certificate."""

    order_id = Id(required=True)
    names = fields.List(fields.String(), required=True)
    domains = fields.List(fields.String(), required=True)
    reissue_at = Time(required=True)
    serial = fields.String(required=True)


@register("orders.order.assignees_changed")
class AssigneesChanged(Payload):
    order_id = Id(required=True)
    user_ids = fields.List(Id(), required=True)


@register("orders.order.reissue_requested")
class ReissueRequested(Payload):
    """A new certificate for an issued order: asked by someone, or a plan's automatic one."""

    order_id = Id(required=True)
    issuance_id = Id(required=True)
    sans = fields.List(fields.String(), required=True)
    revoke_previous = fields.Boolean(required=True)
    automatic = fields.Boolean(required=True)


@register("orders.order.reissued")
class OrderReissued(Payload):
    """The reissued certificate arrived and is the order's certificate from now on."""

    order_id = Id(required=True)
    issuance_id = Id(required=True)
    serial = fields.String(required=True)
    previous_serial = fields.String(allow_none=True)
    automatic = fields.Boolean(required=True)


@register("orders.order.reissue_failed")
class ReissueFailed(Payload):
    """ca-signer refused a reissue; the current certificate stays."""

    order_id = Id(required=True)
    issuance_id = Id(required=True)
    reason = fields.String(required=True)


@register("orders.order.revoked")
class OrderRevoked(Payload):
    """The order ended revoked; ``serials``: the certificates asked to be revoked."""

    order_id = Id(required=True)
    reason = fields.String(required=True)
    serials = fields.List(fields.String(), required=True)


@register("orders.order.refunded")
class OrderRefunded(Payload):
    """An issued order was taken back within the refund window: ledger returns the money."""

    order_id = Id(required=True)
    amount_cents = Cents(required=True)
    note = fields.String(allow_none=True)


@register("orders.order.expired")
class OrderExpired(Payload):
    order_id = Id(required=True)
    serial = fields.String(allow_none=True)


@register("orders.renewal.notice_sent")
class RenewalNoticeSent(Payload):
    order_id = Id(required=True)
    days_left = fields.Integer(required=True)
    recipients = fields.List(fields.String(), required=True)
    serial = fields.String()  # the certificate the notice is about
    days_before = fields.Integer()  # the notice day it was sent for


@register("orders.renewal.settings_changed")
class RenewalSettingsChanged(Payload):
    """Renewal-notice settings changed: an account's defaults or one order's override
    (``days_before`` / ``emails`` null there: as the account)."""

    scope = fields.String(required=True, validate=validate.OneOf(("account", "order")))
    order_id = Id(allow_none=True)
    days_before = fields.List(fields.Integer(), allow_none=True)
    emails = fields.List(fields.String(), allow_none=True)
    enabled = fields.Boolean()

# --- ca-signer -----------------------------------------------------------------------


class ValidationUsed(Payload):
    """One validation a signing command rests on: a domain's (the ``names`` of the
    certificate it covers) or the organization's (OV, EV)."""

    kind = fields.String(required=True, validate=validate.OneOf(("domain", "organization")))
    name = fields.String(required=True)
    method = fields.String(allow_none=True)
    validated_at = Time(required=True)
    names = fields.List(fields.String(), required=True)


@register("ca_signer.certificate.sign")
class SignCertificate(Payload):
    order_id = Id(required=True)
    issuance_id = Id(required=True)
    csr_pem = fields.String(required=True)
    profile = fields.String(required=True)
    subject = fields.Dict(required=True)
    sans = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    not_after = Time(allow_none=True)
    # the evidence orders relied on; ca-signer refuses public profiles without it, or
    # when it is too old on the day it signs (BR 4.2.1)
    validations = fields.List(fields.Nested(ValidationUsed))


@register("ca_signer.certificate.revoke")
class RevokeCertificate(Payload):
    serial = fields.String(required=True)
    reason = fields.String(required=True)


@register("ca_signer.certificate.issued")
class CertificateIssued(Payload):
    order_id = Id(required=True)
    issuance_id = Id(required=True)
    serial = fields.String(required=True)
    issuer_id = Id(required=True)
    not_before = Time(required=True)
    not_after = Time(required=True)
    sans = fields.List(fields.String(), required=True)
    certificate_pem = fields.String(required=True)
    chain_pem = fields.String(required=True)


@register("ca_signer.certificate.rejected")
class CertificateRejected(Payload):
    order_id = Id(required=True)
    issuance_id = Id(required=True)
    reason = fields.String(required=True)
    lint_findings = fields.List(fields.Dict(), required=True)
    # "validation_expired": the evidence was too old on the signing day; ``names`` and
    # ``organization`` say which (orders waits for a new validation, nothing is released)
    code = fields.String(allow_none=True)
    names = fields.List(fields.String())
    organization = fields.Boolean()


@register("ca_signer.certificate.revoked")
class CertificateRevoked(Payload):
    serial = fields.String(required=True)
    reason = fields.String(required=True)
    revoked_at = Time(required=True)


@register("ca_signer.key.blocked")
class KeyBlocked(Payload):
    """A subscriber key put on the blocklist (reported compromised): no certificate is
    issued for it again, in any account. orders keeps a copy to refuse it at once."""

    spki_sha256 = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{64}$"))
    reason = fields.String(required=True)
    source = fields.String(required=True)
    serial = fields.String(allow_none=True, load_default=None)


@register("ca_signer.problem.reported")
class ProblemReported(Payload):
    """A certificate problem report reached the CA (BR 4.9.3): a proven key compromise
    (resolved at once: the key blocked, its certificates revoked) or a report that
    waits for the operator."""

    report_id = Id(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(
        ("key_compromise", "misuse", "other")))
    status = fields.String(required=True, validate=validate.OneOf(("open", "resolved")))
    serial = fields.String(allow_none=True, load_default=None)
    spki_sha256 = fields.String(allow_none=True, load_default=None)
    revoked_serials = fields.List(fields.String(), required=True)


@register("ca_signer.crl.published")
class CrlPublished(Payload):
    issuer_id = Id(required=True)
    number = fields.Integer(required=True)
    entries = fields.Integer(required=True)


@register("ca_signer.issuer.created")
class IssuerCreated(Payload):
    """A root (key offline) or issuing CA was registered by chancery-ca or the dev seed."""

    issuer_id = Id(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(("root", "issuing")))
    parent_id = Id(allow_none=True)
    # added with private hierarchies; events from before them carry none (then public)
    hierarchy = fields.String(load_default="public",
                              validate=validate.OneOf(("public", "private")))
    subject = fields.String(required=True)
    key_type = fields.String(required=True)
    key_backend = fields.String(required=True,
                                validate=validate.OneOf(("software", "pkcs11", "offline")))
    not_before = Time(required=True)
    not_after = Time(required=True)


@register("ca_signer.issuer.retired")
class IssuerRetired(Payload):
    """An issuing CA was rotated out: it signs nothing new, its profiles moved."""

    issuer_id = Id(required=True)
    replaced_by = Id(required=True)
    profiles = fields.List(fields.String(), required=True)


@register("ca_signer.issuer.revoked")
class IssuerRevoked(Payload):
    issuer_id = Id(required=True)
    reason = fields.String(required=True)
    revoked_at = Time(required=True)


@register("ca_signer.profile.assigned")
class ProfileAssigned(Payload):
    profile = fields.String(required=True)
    issuer_id = Id(required=True)
    previous_issuer_id = Id(allow_none=True)


@register("ca_signer.ocsp_responder.created")
class OcspResponderCreated(Payload):
    issuer_id = Id(required=True)
    responder_id = Id(required=True)
    not_after = Time(required=True)

# --- audit ---------------------------------------------------------------------------


@register("audit.checkpoint.signed")
class CheckpointSigned(Payload):
    """A signed statement of a log's head: keep these to detect a log cut short later."""

    log_key = fields.String(required=True)
    sequence = fields.Integer(required=True)
    head_hash = fields.String(required=True)
    signed_at = Time(required=True)
    key_id = fields.String(required=True)
    public_key = fields.String(required=True)
    signature = fields.String(required=True)


@register("audit.log.purged")
class LogPurged(Payload):
    log_key = fields.String(required=True)
    before = Time(required=True)
    entries = fields.Integer(required=True)
    first_sequence = fields.Integer(required=True)
    through_sequence = fields.Integer(required=True)

# --- ledger --------------------------------------------------------------------------


class DepositChanged(Payload):
    deposit_id = Id(required=True)
    method = fields.String(required=True, validate=validate.OneOf(["card", "purchase_order"]))
    amount_cents = Cents(required=True)


register_many(["ledger.deposit.settled", "ledger.deposit.declined", "ledger.deposit.pending"],
              DepositChanged)


class FundsMoved(Payload):
    order_id = Id(required=True)
    amount_cents = Cents(required=True)
    available_cents = Cents(required=True)


register_many(["ledger.funds.reserved", "ledger.funds.declined", "ledger.funds.captured",
               "ledger.funds.released"], FundsMoved)
# a waiting (never held) request closed because its order ended; nothing moved
register_many(["ledger.funds.withdrawn"], FundsMoved)
# a refunded order's price returned to the available balance
register_many(["ledger.funds.refunded"], FundsMoved)


@register("ledger.balance.low")
class BalanceLow(Payload):
    available_cents = Cents(required=True)
    threshold_cents = Cents(required=True)


class UnitFundsMoved(Payload):
    """Money moved between an account's available balance and a unit's division funds."""

    unit_id = Id(required=True)
    amount_cents = Cents(required=True)
    unit_available_cents = Cents(required=True)
    available_cents = Cents(required=True)


register_many(["ledger.unit_funds.allocated", "ledger.unit_funds.returned"], UnitFundsMoved)


@register("ledger.settings.low_balance_changed")
class LowBalanceChanged(Payload):
    threshold_cents = Cents(required=True)
    enabled = fields.Boolean(required=True)
