"""audit's HTTP input and output schemas (they generate the OpenAPI document)."""

from __future__ import annotations

import re
from typing import Any

from chancery_shared.messaging.envelope import isoformat
from chancery_shared.web.pagination import PageArgs
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from chancery_audit.model import as_utc

# "2026-01-02T03:04:05+02:00" typed into a query string unencoded arrives with a space.
_UNENCODED_PLUS = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


class EntryFilterArgs(Schema):
    """The search criteria shared by the JSON list and the CSV download.

    No ``minLength``: an empty field means "any" (``_tidy`` drops it), and the document
    says so rather than promising a 422 that never comes.
    """

    user_id = fields.String(validate=validate.Length(max=200),
                            metadata={"description": "entries caused by this user"})
    start = fields.AwareDateTime(data_key="from", metadata={
        "description": "RFC 3339; entries at or after this time"})
    end = fields.AwareDateTime(data_key="to", metadata={
        "description": "RFC 3339; entries before this time"})
    action = fields.String(validate=validate.Length(max=200), metadata={
        "description": "message type, or its leading parts: `orders.order` is every order "
                       "event, `orders` everything orders did"})
    q = fields.String(validate=[
        validate.Length(max=200),
        validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="must not contain control characters"),
    ], metadata={"description": "text in the description, the user's name or the target "
                                "(case-insensitive)"})
    target = fields.String(validate=validate.Length(max=300), metadata={
        "description": "`<type>:<id>` (e.g. `order:7f3…`), or a type alone (`order`)"})
    account_id = fields.String(validate=validate.Length(max=200), metadata={
        "description": "platform operators: one account's entries"})

    @pre_load
    def _tidy(self, data: Any, **_kw: Any) -> Any:
        """A search form's empty fields mean 'any'; restore a ``+`` lost in the query."""
        if not hasattr(data, "items"):
            return data
        fixed = {key: value for key, value in data.items() if value != ""}
        for key in ("from", "to"):
            value = fixed.get(key)
            if isinstance(value, str):
                fixed[key] = _UNENCODED_PLUS.sub(r"\1+\2", value.strip())
        return fixed

    @validates_schema
    def _range(self, data: dict[str, Any], **_kw: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None and start >= end:
            raise ValidationError("must be later than from", "to")


class EntrySearchArgs(EntryFilterArgs, PageArgs):
    """Criteria plus ``limit`` (default 50, at most 500) and the ``cursor`` of a page."""


class UtcTime(fields.Field):
    """A stored time as RFC 3339 UTC with a ``Z``, the one time format on the wire."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else isoformat(as_utc(value))


class EntrySchema(Schema):
    id = fields.String()
    at = UtcTime(metadata={"description": "when it happened"})
    account_id = fields.String(allow_none=True,
                               metadata={"description": "null for platform-wide entries"})
    user_id = fields.String(allow_none=True)
    user_name = fields.String(allow_none=True,
                              metadata={"description": "or the service, for automatic steps"})
    ip = fields.String(allow_none=True)
    service = fields.String()
    action = fields.String()
    target = fields.String(metadata={"description": "`<subject type>:<subject id>`"})
    description = fields.String()
    correlation_id = fields.String(metadata={"description": "the same for one business flow"})


class EntryPage(Schema):
    items = fields.List(fields.Nested(EntrySchema))
    next_cursor = fields.String(allow_none=True)


class EntryDetailSchema(EntrySchema):
    recorded_at = UtcTime()
    subject_type = fields.String()
    subject_id = fields.String()
    causation_id = fields.String(allow_none=True)
    unit_ids = fields.List(fields.String())
    sequence = fields.Integer(metadata={"description": "position in its account's log"})
    prev_hash = fields.String(metadata={"description": "hash of the entry before it"})
    hash = fields.String(metadata={"description": "SHA-256 over prev_hash and the content"})
    message = fields.Dict(metadata={"description": "the message exactly as received"})



class VerifyArgs(Schema):
    account_id = fields.String(metadata={
        "description": "operator only: one account's log (default: every log)"})


class FindingSchema(Schema):
    sequence = fields.Integer(metadata={"description": "position of the first bad entry"})
    entry_id = fields.String(allow_none=True)
    problem = fields.String(metadata={"description": "missing, out_of_order, modified, "
                                      "truncated, inserted, head_mismatch, "
                                      "checkpoint_mismatch or bad_signature"})
    detail = fields.String()


class LogVerificationSchema(Schema):
    log_key = fields.String()
    ok = fields.Boolean()
    entries_checked = fields.Integer()
    checkpoints_checked = fields.Integer()
    head_hash = fields.String(allow_none=True)
    first_bad = fields.Nested(FindingSchema, allow_none=True)


class VerificationSchema(Schema):
    ok = fields.Boolean(metadata={"description": "every log checked is intact"})
    entries_checked = fields.Integer()
    head_hash = fields.String(allow_none=True, metadata={
        "description": "the head of the log checked (of the first bad log, or null when "
                       "several logs were checked)"})
    first_bad = fields.Nested(FindingSchema, allow_none=True)
    logs = fields.List(fields.Nested(LogVerificationSchema))
