"""The ledger's HTTP input and output schemas (they also generate the OpenAPI document).

Card rules (Luhn, expiry, CVC) run here so that every bad field is reported at once,
named as ``card.number``, ``card.exp_month``... and no message ever repeats the number.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chancery_shared.messaging.envelope import isoformat
from chancery_shared.web.pagination import PageArgs, PageSchema
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from chancery_ledger import cards
from chancery_ledger.model import CARD, CURRENCY, DEPOSIT_METHODS, PURCHASE_ORDER, Deposit

MAX_DEPOSIT_CENTS = 100_000_000  # $1,000,000.00 in one deposit
MAX_ALLOCATION_CENTS = 10_000_000_000  # $100,000,000.00 moved to or from a unit at once
MAX_THRESHOLD_CENTS = 10_000_000_000
UNIT_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,35}$"  # identity's unit ids (UUIDs); shape only
Cents = lambda **kw: fields.Integer(strict=True, **kw)  # noqa: E731


class UtcTime(fields.DateTime):
    """RFC 3339 UTC with a ``Z``, as on the bus."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        return isoformat(value) if value is not None else None


def _rule(problem_of: Callable[[str], str | None]) -> Callable[[str], None]:
    def check(value: str) -> None:
        problem = problem_of(value)
        if problem:
            raise ValidationError(problem)
    return check


class CardInput(Schema):
    number = fields.String(required=True, load_only=True,
                           validate=_rule(cards.number_problem),
                           metadata={"description": "the full card number; never stored",
                                     "example": "4242 4242 4242 4242"})
    exp_month = fields.Integer(required=True, strict=True, validate=validate.Range(1, 12))
    exp_year = fields.Integer(required=True, strict=True, validate=validate.Range(2000, 2100),
                              metadata={"description": "four digits, e.g. 2030"})
    cvc = fields.String(required=True, load_only=True, validate=_rule(cards.cvc_problem))

    @validates_schema
    def _not_expired(self, data: dict[str, Any], **_kw: Any) -> None:
        if "exp_month" not in data or "exp_year" not in data:
            return
        today = datetime.now(UTC).date()
        problem = cards.expiry_problem(data["exp_month"], data["exp_year"], today)
        if problem:
            field = "exp_month" if data["exp_year"] == today.year else "exp_year"
            raise ValidationError(problem, field)


class DepositRequest(Schema):
    """A card deposit ``{method: "card", amount_cents, card}`` or a purchase order
    ``{method: "purchase_order", amount_cents, po_number}``."""

    method = fields.String(required=True, validate=validate.OneOf(DEPOSIT_METHODS))
    amount_cents = Cents(required=True, validate=validate.Range(
        min=1, max=MAX_DEPOSIT_CENTS,
        error=f"must be between 1 and {MAX_DEPOSIT_CENTS} cents"))
    card = fields.Nested(CardInput)
    po_number = fields.String(validate=[
        validate.Length(min=1, max=64),
        validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9 ._/#-]*$",
                        error="use letters, digits, spaces and . _ / # -")])
    due_in_days = fields.Integer(strict=True, validate=validate.Range(
        min=1, max=90, error="must be between 1 and 90 days"), metadata={
        "description": "purchase orders: the invoice is due this many days after today "
                       "(default 30)"})

    @validates_schema
    def _fits_method(self, data: dict[str, Any], **_kw: Any) -> None:
        method = data.get("method")
        if method == CARD:
            if "card" not in data:
                raise ValidationError("is required to pay by card", "card")
            if "po_number" in data:
                raise ValidationError("is only for purchase orders", "po_number")
        elif method == PURCHASE_ORDER:
            if "po_number" not in data:
                raise ValidationError("is required for a purchase order", "po_number")
            if "card" in data:
                raise ValidationError("is only for card payments", "card")
        if method == CARD and "due_in_days" in data:
            raise ValidationError("is only for purchase orders", "due_in_days")


class CardOutput(Schema):
    brand = fields.String()
    last4 = fields.String()


class PersonSchema(Schema):
    id = fields.String()
    name = fields.String()


class DepositSchema(Schema):
    id = fields.String()
    account_id = fields.String()
    status = fields.String(metadata={"enum": ["pending", "settled", "declined"]})
    receipt_id = fields.String(allow_none=True)
    amount_cents = fields.Integer()
    currency = fields.String()
    method = fields.String()
    card = fields.Nested(CardOutput, allow_none=True)
    po_number = fields.String(allow_none=True)
    invoice_number = fields.String(allow_none=True, metadata={
        "description": "purchase orders: sequential per account, e.g. INV-1A2B3C4D-000001"})
    due_date = fields.Date(allow_none=True, metadata={
        "description": "purchase orders: the day the invoice is due"})
    decline_code = fields.String(allow_none=True)
    decline_reason = fields.String(allow_none=True)
    requested_by = fields.Nested(PersonSchema)
    settled_by = fields.Nested(PersonSchema, allow_none=True)
    created_at = UtcTime()
    settled_at = UtcTime(allow_none=True)


def deposit_view(deposit: Deposit) -> dict[str, Any]:
    """A deposit as the API shows it (built while its unit of work is open)."""
    settled_by = ({"id": deposit.settled_by, "name": deposit.settled_by_name}
                  if deposit.settled_by else None)
    return {"id": deposit.id, "account_id": deposit.customer_account_id,
            "status": deposit.status, "receipt_id": deposit.receipt_id,
            "amount_cents": deposit.amount_cents, "currency": CURRENCY,
            "method": deposit.method, "card": deposit.card, "po_number": deposit.po_number,
            "invoice_number": deposit.invoice_number, "due_date": deposit.due_date,
            "decline_code": deposit.decline_code, "decline_reason": deposit.decline_reason,
            "requested_by": {"id": deposit.requested_by, "name": deposit.requested_by_name},
            "settled_by": settled_by, "created_at": deposit.created_at,
            "settled_at": deposit.settled_at}


class DepositListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(["pending", "settled", "declined"]))


class DepositPage(PageSchema):
    items = fields.List(fields.Nested(DepositSchema))


class BalanceSchema(Schema):
    available_cents = fields.Integer()
    reserved_cents = fields.Integer()
    currency = fields.String()


class TransactionArgs(PageArgs):
    from_ = fields.AwareDateTime(data_key="from", metadata={
        "description": "RFC 3339; movements at or after this time"})
    to = fields.AwareDateTime(metadata={"description": "RFC 3339; movements before this time"})


class TransactionSchema(Schema):
    id = fields.String()
    type = fields.String(metadata={"enum": ["deposit", "reservation", "capture", "release",
                                            "refund", "allocation", "allocation_return"]})
    amount_cents = fields.Integer()
    available_change_cents = fields.Integer()
    reserved_change_cents = fields.Integer()
    available_after_cents = fields.Integer()
    reserved_after_cents = fields.Integer()
    description = fields.String()
    order_id = fields.String(allow_none=True)
    deposit_id = fields.String(allow_none=True)
    occurred_at = UtcTime()


class TransactionPage(PageSchema):
    items = fields.List(fields.Nested(TransactionSchema))


class ReceiptSchema(Schema):
    id = fields.String()
    number = fields.String()
    account_id = fields.String()
    deposit_id = fields.String()
    amount_cents = fields.Integer()
    currency = fields.String()
    method = fields.String()
    card = fields.Nested(CardOutput, allow_none=True)
    po_number = fields.String(allow_none=True)
    paid_by = fields.Nested(PersonSchema)
    settled_by = fields.Nested(PersonSchema, allow_none=True)
    description = fields.String()
    issued_at = UtcTime()


# --- division (unit) funds and the low-balance warning -----------------------------------


class UnitPath(Schema):
    unit_id = fields.String(required=True, validate=validate.Regexp(
        UNIT_ID, error="is not a unit id (letters, digits, - and _, at most 36)"))


class UnitFundsRequest(Schema):
    amount_cents = Cents(required=True, validate=validate.Range(
        min=1, max=MAX_ALLOCATION_CENTS,
        error=f"must be between 1 and {MAX_ALLOCATION_CENTS} cents"))


class UnitFundsSchema(Schema):
    unit_id = fields.String()
    available_cents = fields.Integer(metadata={"description": "the unit's money, spent first "
                                                              "by its orders"})
    reserved_cents = fields.Integer(metadata={"description": "held for its open orders"})
    currency = fields.String()


class UnitFundsList(Schema):
    items = fields.List(fields.Nested(UnitFundsSchema))


class StrictBoolean(fields.Boolean):
    """JSON ``true``/``false`` only (not 1, "yes" or "true", which marshmallow accepts)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class LowBalanceSchema(Schema):
    threshold_cents = Cents(required=True, validate=validate.Range(
        min=0, max=MAX_THRESHOLD_CENTS,
        error=f"must be between 0 and {MAX_THRESHOLD_CENTS} cents"), metadata={
        "description": "warn when the available balance falls below this"})
    enabled = StrictBoolean(required=True)
