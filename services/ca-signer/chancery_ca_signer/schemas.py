"""ca-signer's HTTP output schemas."""

from marshmallow import Schema, fields, validate

PROBLEM_KINDS = ("key_compromise", "misuse", "other")


class IssuerSchema(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "root or issuing"})
    hierarchy = fields.String(metadata={
        "description": "public (signs dv, ov, ev) or private (signs private); an issuing CA "
                       "has its root's"})
    parent_id = fields.String(allow_none=True)
    subject = fields.String()
    not_before = fields.DateTime()
    not_after = fields.DateTime()
    active = fields.Boolean(metadata={"description": "signs new certificates"})
    key_type = fields.String(allow_none=True, metadata={"description": "e.g. ec-p256, rsa-2048"})
    key_backend = fields.String(metadata={"description": "software, pkcs11 or offline"})
    revoked_at = fields.DateTime(allow_none=True)
    profiles = fields.List(fields.String(), metadata={
        "description": "the profiles this CA signs (dv, ov, ev for a public one, private for a "
                       "private one)"})
    certificate_pem = fields.String()


class IssuerPage(Schema):
    items = fields.List(fields.Nested(IssuerSchema))
    next_cursor = fields.String(allow_none=True)


class NewProblemReportSchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(PROBLEM_KINDS), metadata={
        "description": "key_compromise (with csr), misuse or other (with message)"})
    csr = fields.String(validate=validate.Length(max=64 * 1024), load_default=None,
                        metadata={"description": "key_compromise: a PEM CSR signed by the "
                                                 "compromised key, subject CN=Chancery key "
                                                 "compromise report"})
    message = fields.String(validate=validate.Length(min=1, max=5000), load_default=None)
    email = fields.Email(validate=validate.Length(max=320), load_default=None,
                         metadata={"description": "where the operator may answer"})
    serial = fields.String(validate=validate.Regexp(r"^[0-9A-Fa-f:]{1,80}$"),
                           load_default=None,
                           metadata={"description": "the certificate concerned, in hex"})


class ProblemReportSchema(Schema):
    id = fields.String()
    kind = fields.String()
    status = fields.String(metadata={"description": "resolved (a proven key compromise) "
                                                    "or open (waits for the operator)"})
    serial = fields.String(allow_none=True)
    spki_sha256 = fields.String(allow_none=True, metadata={
        "description": "the reported key (SHA-256 of its SubjectPublicKeyInfo)"})
    revoked_serials = fields.List(fields.String())
    created_at = fields.DateTime()


class ProblemReportDetailSchema(ProblemReportSchema):
    """What the operator sees besides: who reported it and what they said."""

    reporter_email = fields.String(allow_none=True)
    reporter_ip = fields.String(allow_none=True)
    message = fields.String(allow_none=True)


class ProblemReportPage(Schema):
    items = fields.List(fields.Nested(ProblemReportDetailSchema))
    next_cursor = fields.String(allow_none=True)


class ProblemReportListArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
