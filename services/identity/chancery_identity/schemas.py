"""identity's HTTP input and output schemas (they generate the OpenAPI document)."""

from chancery_shared.text import DESCRIPTION as NAME_RULES
from chancery_shared.text import DisplayName
from chancery_shared.web.pagination import PageArgs
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from chancery_identity.model import ACCOUNT_ROLES
from chancery_identity.passwords import MAX_LENGTH, MIN_LENGTH

Email = lambda **kw: fields.Email(validate=validate.Length(max=254), **kw)  # noqa: E731
# names people read (of people, units, accounts, keys): shown in audit descriptions, so
# nothing that could disguise the text around it (chancery_shared.text)
Name = lambda **kw: fields.String(  # noqa: E731
    validate=[validate.Length(min=1, max=200), DisplayName()],
    metadata={"description": f"1 to 200 characters; {NAME_RULES}"}, **kw)
# the policy (passwords.py) gives the reasons; the schema only bounds the size
NewPassword = lambda **kw: fields.String(  # noqa: E731
    validate=validate.Length(min=MIN_LENGTH, max=MAX_LENGTH), load_only=True, **kw)


class SessionRequest(Schema):
    """Either ``{email, password}`` or ``{api_key}``."""

    email = fields.String(validate=validate.Length(max=254))
    password = fields.String(validate=validate.Length(max=MAX_LENGTH), load_only=True)
    api_key = fields.String(validate=validate.Length(max=200), load_only=True)

    @validates_schema
    def _one_method(self, data, **_kw):
        if "api_key" in data:
            if "email" in data or "password" in data:
                raise ValidationError("give either an API key or an e-mail and password",
                                      "api_key")
            return
        if not data.get("email"):
            raise ValidationError("email and password (or api_key) are required", "email")
        if "password" not in data:
            raise ValidationError("email and password (or api_key) are required", "password")


class RefreshRequest(Schema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=200),
                                  load_only=True)


class SessionResponse(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})
    session_id = fields.String(allow_none=True,
                               metadata={"description": "null for API-key sign-ins"})
    refresh_token = fields.String(metadata={"description": "absent for API-key sign-ins; "
                                            "works once: use the new one each refresh"})
    refresh_expires_in = fields.Integer(metadata={"description": "seconds until the session "
                                                  "ends, whatever the refreshes"})


class UserSchema(Schema):
    id = fields.String(dump_only=True)
    email = fields.String()
    name = fields.String()
    role = fields.String()
    account_id = fields.String(allow_none=True)
    unit_ids = fields.List(fields.String())
    active = fields.Boolean()
    locked_until = fields.Method("_locked_until", allow_none=True, metadata={
        "type": "string", "format": "date-time",
        "description": "sign-in is locked after repeated failures until then; null when not "
                       "locked"})
    failed_logins = fields.Integer(metadata={"description": "consecutive failures counted"})
    last_login_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    def _locked_until(self, user):
        from chancery_shared.service import current_service

        if user.locked_until is None or not user.is_locked(current_service().clock()):
            return None
        return fields.DateTime()._serialize(user.locked_until, "locked_until", user)


class MeSchema(Schema):
    id = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    account_id = fields.String(allow_none=True)
    unit_ids = fields.List(fields.String())
    session_id = fields.String(allow_none=True)


class NewUserSchema(Schema):
    email = Email(required=True, metadata={
        "description": "the user's sign-in address, unique on the whole platform; one "
                       "already in use (in this account or any other) is refused with 409 "
                       "`email_unavailable`, which does not say where"})
    name = Name(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ACCOUNT_ROLES))
    unit_ids = fields.List(fields.String(), load_default=list)
    password = NewPassword(required=True)


class UserPatchSchema(Schema):
    name = Name()
    role = fields.String(validate=validate.OneOf(ACCOUNT_ROLES))
    unit_ids = fields.List(fields.String())
    active = fields.Boolean()


class PasswordChangeSchema(Schema):
    current_password = fields.String(required=True, validate=validate.Length(max=MAX_LENGTH),
                                     load_only=True)
    new_password = NewPassword(required=True)


class ListArgs(PageArgs):
    pass


class UserPage(Schema):
    items = fields.List(fields.Nested(UserSchema))
    next_cursor = fields.String(allow_none=True)


class UnitSchema(Schema):
    id = fields.String(dump_only=True)
    name = Name(required=True)
    account_id = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class UnitPage(Schema):
    items = fields.List(fields.Nested(UnitSchema))
    next_cursor = fields.String(allow_none=True)


class NewApiKeySchema(Schema):
    name = Name(required=True)


class ApiKeySchema(Schema):
    id = fields.String()
    name = fields.String()
    prefix = fields.String(metadata={"description": "the visible part: chy_<prefix>_..."})
    created_at = fields.DateTime()
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class CreatedApiKeySchema(ApiKeySchema):
    key = fields.String(metadata={"description": "the key itself, shown this once only"})


class ApiKeyPage(Schema):
    items = fields.List(fields.Nested(ApiKeySchema))
    next_cursor = fields.String(allow_none=True)


class NewAccountSchema(Schema):
    name = Name(required=True)
    admin_email = Email(required=True)
    admin_name = Name(required=True)
    admin_password = NewPassword(required=True)


class AccountSchema(Schema):
    id = fields.String()
    name = fields.String()
    admin = fields.Nested(UserSchema)
