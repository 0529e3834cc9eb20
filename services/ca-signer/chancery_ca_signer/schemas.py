"""ca-signer's HTTP output schemas."""

from marshmallow import Schema, fields


class IssuerSchema(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "root or issuing"})
    parent_id = fields.String(allow_none=True)
    subject = fields.String()
    not_before = fields.DateTime()
    not_after = fields.DateTime()
    active = fields.Boolean(metadata={"description": "signs new certificates"})
    key_type = fields.String(allow_none=True, metadata={"description": "e.g. ec-p256, rsa-2048"})
    key_backend = fields.String(metadata={"description": "software, pkcs11 or offline"})
    revoked_at = fields.DateTime(allow_none=True)
    profiles = fields.List(fields.String(), metadata={
        "description": "the profiles (dv, ov, ev, private) this CA signs"})
    certificate_pem = fields.String()


class IssuerPage(Schema):
    items = fields.List(fields.Nested(IssuerSchema))
    next_cursor = fields.String(allow_none=True)
