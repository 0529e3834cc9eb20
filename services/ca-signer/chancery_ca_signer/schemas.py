"""ca-signer's HTTP output schemas."""

from marshmallow import Schema, fields


class IssuerSchema(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "root or issuing"})
    parent_id = fields.String(allow_none=True)
    subject = fields.String()
    not_before = fields.DateTime()
    not_after = fields.DateTime()
    active = fields.Boolean()
    certificate_pem = fields.String()


class IssuerPage(Schema):
    items = fields.List(fields.Nested(IssuerSchema))
    next_cursor = fields.String(allow_none=True)
