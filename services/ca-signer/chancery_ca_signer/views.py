"""ca-signer's HTTP entrypoints: the issuer list, and the public CA downloads."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from chancery_shared.auth.permissions import Permission
from chancery_shared.auth.policy import public, require
from chancery_shared.messaging.envelope import Actor, Context, utcnow
from chancery_shared.service import current_service
from chancery_shared.web.app import client_ip
from flask import Response, request
from flask_smorest import Blueprint
from werkzeug.http import http_date

from chancery_ca_signer import handlers, schemas
from chancery_ca_signer.pki import ocsp as ocsp_answers

api = Blueprint("ca", __name__, url_prefix="/api/ca/v1", description="Certificate authorities")
public_ca = Blueprint("public_ca", __name__, url_prefix="/ca",
                      description="Public CA downloads: issuer certificates (AIA caIssuers), "
                                  "CRLs and OCSP")

#: Longest time an HTTP cache may keep a CRL or an OCSP answer: revocations reach the
#: CRL within a minute, so caches must not hold the previous one for days.
MAX_CACHE_SECONDS = 3600
#: How long an HTTP cache may keep an ``unknown`` answer: a serial nobody has a
#: certificate for yet, which may become ``good`` once its signing finishes.
UNKNOWN_CACHE_SECONDS = 60
#: Larger OCSP requests are refused as malformed (RFC 5019 requests are ~100 bytes).
MAX_OCSP_REQUEST_BYTES = 16 * 1024
OCSP_RESPONSE = "application/ocsp-response"


@api.route("/issuers")
@api.response(200, schemas.IssuerPage)
def list_issuers():
    """The CAs of this deployment: roots and issuing CAs, with their certificates."""
    require(Permission.READ_ISSUERS)
    with current_service().uow() as uow:
        return {"items": handlers.issuer_summaries(uow), "next_cursor": None}


@api.route("/problem-reports")
@api.arguments(schemas.ProblemReportListArgs, location="query")
@api.response(200, schemas.ProblemReportPage)
def list_problem_reports(args):
    """Certificate problem reports, newest first (the platform operator)."""
    require(Permission.OPERATE_CA)
    with current_service().uow() as uow:
        return {"items": handlers.problem_reports(uow, args["limit"]), "next_cursor": None}


@public_ca.route("/problem-reports", methods=["POST"])
@public_ca.arguments(schemas.NewProblemReportSchema)
@public_ca.response(201, schemas.ProblemReportSchema)
@public
def report_problem(body):
    """Report a certificate problem (BR 4.9.3); no account needed.

    ``key_compromise``: prove possession with a CSR signed by the key whose subject is
    exactly ``CN=Chancery key compromise report``. The key is blocked at once for every
    account and each unexpired certificate for it is revoked (``revoked_serials``).
    ``misuse`` and ``other``: a ``message`` (and an ``email`` to answer) for the platform
    operator, who lists reports at ``GET /api/ca/v1/problem-reports``."""
    context = Context(actor=Actor(system="problem-reporter", ip=client_ip()), account_id=None)
    with current_service().uow() as uow:
        report = handlers.report_problem(
            uow, context, body["kind"], now=utcnow(), csr_pem=body["csr"],
            message=body["message"], email=body["email"], serial=body["serial"],
            ip=client_ip())
        return report


@public_ca.route("/issuers/<issuer_id>.crt")
@public_ca.response(200, content_type="application/pkix-cert")
@public
def issuer_certificate(issuer_id):
    """An issuer's certificate, DER encoded: the URL certificates name in caIssuers."""
    with current_service().uow() as uow:
        der = handlers.issuer_certificate_der(uow, issuer_id)
    return Response(der, mimetype="application/pkix-cert",
                    headers={"Cache-Control": "public, max-age=86400"})


def _cache_headers(payload: bytes, produced: datetime, next_update: datetime,
                   longest: int = MAX_CACHE_SECONDS) -> dict[str, str]:
    """Cacheable until next_update, at most ``longest`` seconds; ``Last-Modified`` is when
    the payload was produced (a CRL's or an OCSP answer's thisUpdate, RFC 5019 6.2)."""
    now = utcnow()
    max_age = max(0, min(longest, int((next_update - now).total_seconds())))
    return {"Cache-Control": f"public, max-age={max_age}, no-transform, must-revalidate",
            "ETag": f'"{hashlib.sha256(payload).hexdigest()[:32]}"',
            "Last-Modified": http_date(produced),
            "Expires": http_date(now + timedelta(seconds=max_age))}


@public_ca.route("/crl/<issuer_id>.crl")
@public_ca.response(200, content_type="application/pkix-crl")
@public
def issuer_crl(issuer_id):
    """An issuer's current CRL, DER encoded: the URL certificates name as CRL distribution point."""
    service = current_service()
    with service.uow() as uow:
        crl = handlers.current_crl(uow, service.keys, issuer_id, utcnow())
        der, this_update, next_update = crl.der, crl.this_update, crl.next_update
    response = Response(der, mimetype="application/pkix-crl",
                        headers=_cache_headers(der, handlers.as_utc(this_update),
                                               handlers.as_utc(next_update)))
    return response.make_conditional(request)


def _ocsp(request_der: bytes, cacheable: bool) -> Response:
    service = current_service()
    now = utcnow()
    if len(request_der) > MAX_OCSP_REQUEST_BYTES:
        request_der = b""
    with service.uow() as uow:
        answer = handlers.ocsp_answer(uow, service.keys, request_der, now)
    if cacheable and answer.next_update is not None and answer.this_update is not None:
        headers = _cache_headers(answer.der, answer.this_update, answer.next_update,
                                 MAX_CACHE_SECONDS if answer.status in ("good", "revoked")
                                 else UNKNOWN_CACHE_SECONDS)
    else:
        headers = {"Cache-Control": "no-store"}
    response = Response(answer.der, mimetype=OCSP_RESPONSE, headers=headers)
    return response.make_conditional(request) if cacheable else response


@public_ca.route("/ocsp", methods=["POST"])
@public_ca.response(200, content_type=OCSP_RESPONSE)
@public
def ocsp_post():
    """OCSP over POST (RFC 6960 A.1): the DER request is the body. Always HTTP 200;
    a bad request gets an OCSP ``malformedRequest`` answer, an issuer we do not hold
    ``unauthorized``."""
    return _ocsp(request.get_data(cache=False), cacheable=False)


@public_ca.route("/ocsp/<path:encoded>")
@public_ca.response(200, content_type=OCSP_RESPONSE)
@public
def ocsp_get(encoded):
    """OCSP over GET (RFC 5019): the base64 (standard or URL-safe) DER request in the path.
    Successful answers are cacheable (Cache-Control, ETag, Expires)."""
    try:
        request_der = ocsp_answers.decode_get_request(encoded)
    except ValueError:
        request_der = b""
    return _ocsp(request_der, cacheable=True)
