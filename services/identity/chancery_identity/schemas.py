"""identity's HTTP input and output schemas (they generate the OpenAPI document)."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from chancery_identity.model import ACCOUNT_ROLES

Email = lambda **kw: fields.Email(validate=validate.Length(max=254), **kw)  # noqa: E731
Name = lambda **kw: fields.String(validate=validate.Length(min=1, max=200), **kw)  # noqa: E731


class SessionRequest(Schema):
    email = Email()
    password = fields.String(validate=validate.Length(max=1024))
    api_key = fields.String(validate=validate.Length(max=200))

    @validates_schema
    def _one_method(self, data, **_kw):
        if "api_key" in data:
            raise ValidationError("API keys are not accepted yet", "api_key")
        if not data.get("email") or "password" not in data:
            raise ValidationError("email and password are required", "email")


class SessionResponse(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class UserSchema(Schema):
    id = fields.String(dump_only=True)
    email = fields.String()
    name = fields.String()
    role = fields.String()
    account_id = fields.String(allow_none=True)
    unit_ids = fields.List(fields.String())
    active = fields.Boolean()
    created_at = fields.DateTime(dump_only=True)


class MeSchema(Schema):
    id = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    account_id = fields.String(allow_none=True)
    unit_ids = fields.List(fields.String())


class NewUserSchema(Schema):
    email = Email(required=True)
    name = Name(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ACCOUNT_ROLES))
    unit_ids = fields.List(fields.String(), load_default=list)
    password = fields.String(required=True, validate=validate.Length(min=12, max=1024),
                             load_only=True)


class UserPage(Schema):
    items = fields.List(fields.Nested(UserSchema))
    next_cursor = fields.String(allow_none=True)


class UnitSchema(Schema):
    id = fields.String(dump_only=True)
    name = Name(required=True)
    account_id = fields.String(dump_only=True)


class UnitPage(Schema):
    items = fields.List(fields.Nested(UnitSchema))
    next_cursor = fields.String(allow_none=True)


class NewAccountSchema(Schema):
    name = Name(required=True)
    admin_email = Email(required=True)
    admin_name = Name(required=True)
    admin_password = fields.String(required=True, validate=validate.Length(min=12, max=1024),
                                   load_only=True)


class AccountSchema(Schema):
    id = fields.String()
    name = fields.String()
    admin = fields.Nested(UserSchema)
