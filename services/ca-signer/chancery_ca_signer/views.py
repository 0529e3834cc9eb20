"""ca-signer's HTTP entrypoints: the issuer list, and the public CA downloads."""

from __future__ import annotations

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import public, require
from chancery_shared.service import current_service
from flask import Response
from flask_smorest import Blueprint

from chancery_ca_signer import handlers, schemas

api = Blueprint("ca", __name__, url_prefix="/api/ca/v1", description="Certificate authorities")
public_ca = Blueprint("public_ca", __name__, url_prefix="/ca",
                      description="Public CA downloads: issuer certificates (AIA caIssuers)")


@api.route("/issuers")
@api.response(200, schemas.IssuerPage)
def list_issuers():
    """The CAs of this deployment: roots and issuing CAs, with their certificates."""
    require(Permission.READ_ISSUERS)
    with current_service().uow() as uow:
        return {"items": handlers.list_issuers(uow), "next_cursor": None}


@public_ca.route("/issuers/<issuer_id>.crt")
@public_ca.response(200, content_type="application/pkix-cert")
@public
def issuer_certificate(issuer_id):
    """An issuer's certificate, DER encoded: the URL certificates name in caIssuers."""
    with current_service().uow() as uow:
        der = handlers.issuer_certificate_der(uow, issuer_id)
    return Response(der, mimetype="application/pkix-cert",
                    headers={"Cache-Control": "public, max-age=86400"})
