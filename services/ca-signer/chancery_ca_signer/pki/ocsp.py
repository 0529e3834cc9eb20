"""OCSP answers (RFC 6960, RFC 5019 lightweight profile).

An answer is signed by the issuer's delegated responder (see :mod:`.responder`) when it
has one — the responder certificate then travels in the response and the responder id
is its key hash — or else by the issuing CA itself (RFC 6960 4.2.2.2 allows both).
Responses are pre-producible: no nonce is echoed (RFC 5019 2.2.1), so one response per
serial can be cached by HTTP caches until shortly before its nextUpdate.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp

from chancery_ca_signer.pki.crl import REASON_FLAGS
from chancery_ca_signer.pki.keys import CaKey

__all__ = ["OCSP_VALIDITY", "CertificateState", "OcspIssuer", "Responder", "Answer",
           "MalformedRequest", "decode_get_request", "parse_request", "find_issuer",
           "sign_answer", "respond", "error_response"]

#: nextUpdate - thisUpdate: BR 4.9.10 wants 8 hours to 10 days.
OCSP_VALIDITY = timedelta(days=4)


@dataclass(frozen=True)
class CertificateState:
    """What the records say about one serial of one issuer."""

    status: str  # "good", "revoked" or "unknown"
    revoked_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Responder:
    """A delegated responder: its certificate (issued by the CA) and its signing key."""

    certificate: x509.Certificate
    key: CaKey


@dataclass(frozen=True)
class OcspIssuer:
    """An issuer the responder answers for, and who signs its answers: the delegated
    ``responder`` if given, else the CA's own ``key``."""

    id: str
    certificate: x509.Certificate
    key: CaKey | None = None
    responder: Responder | None = None


class MalformedRequest(ValueError):
    """The bytes are not one OCSP request we can answer (bad DER, several certificates,
    an unsupported hash algorithm)."""


def _public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's contents: what issuerKeyHash hashes."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    raise ValueError("unsupported issuer key type")


def issuer_matches(certificate: x509.Certificate, request: ocsp.OCSPRequest) -> bool:
    """True when ``request`` names ``certificate`` by its name and key hashes."""
    algorithm = request.hash_algorithm

    def digest(data: bytes) -> bytes:
        h = hashes.Hash(algorithm)
        h.update(data)
        return h.finalize()

    return (digest(_public_key_bits(certificate)) == request.issuer_key_hash
            and digest(certificate.subject.public_bytes()) == request.issuer_name_hash)


def decode_get_request(encoded: str) -> bytes:
    """RFC 6960 A.1 GET: base64 (standard or URL-safe) of the DER request, URL-encoded."""
    text = unquote(encoded).strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the request is not base64") from None


def error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned OCSP error response (malformedRequest, unauthorized, internalError)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)


@dataclass(frozen=True)
class Answer:
    """A DER response and, for a successful one, when it was produced (``this_update``),
    until when it holds (``next_update``) and what it says (``status``)."""

    der: bytes
    next_update: datetime | None = None
    this_update: datetime | None = None
    status: str | None = None  # "good", "revoked" or "unknown"


def parse_request(request_der: bytes) -> ocsp.OCSPRequest:
    """Parse one DER request, or raise :class:`MalformedRequest`."""
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        _ = (request.serial_number, request.hash_algorithm)  # several requests in one raise here
    except Exception:  # bad DER, several requests in one, an unsupported hash algorithm
        raise MalformedRequest("not a single OCSP request") from None
    return request


def find_issuer(request: ocsp.OCSPRequest, issuers: list[OcspIssuer]) -> OcspIssuer | None:
    """The issuer the request names by its name and key hashes, if it is one of ours."""
    try:
        return next((i for i in issuers if issuer_matches(i.certificate, request)), None)
    except Exception:
        raise MalformedRequest("the request's hashes cannot be checked") from None


def sign_answer(request: ocsp.OCSPRequest, issuer: OcspIssuer, state: CertificateState,
                now: datetime) -> Answer:
    """A successful, signed answer about the request's serial saying ``state``."""
    this_update = now.replace(microsecond=0)
    next_update = this_update + OCSP_VALIDITY
    status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED}.get(
        state.status, ocsp.OCSPCertStatus.UNKNOWN)
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number, algorithm=request.hash_algorithm,
        cert_status=status, this_update=this_update, next_update=next_update,
        revocation_time=state.revoked_at if revoked else None,
        revocation_reason=REASON_FLAGS.get(state.reason or "unspecified") if revoked else None,
    )
    if issuer.responder is not None:
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH,
                                       issuer.responder.certificate)
        builder = builder.certificates([issuer.responder.certificate])
        response = issuer.responder.key.sign_ocsp_response(builder)
    else:
        if issuer.key is None:
            raise ValueError(f"issuer {issuer.id} has neither a responder nor a key")
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
        response = issuer.key.sign_ocsp_response(builder)
    return Answer(response.public_bytes(serialization.Encoding.DER), next_update, this_update,
                  state.status if state.status in ("good", "revoked") else "unknown")


def respond(request_der: bytes, issuers: list[OcspIssuer],
            state_of: Callable[[str, int], CertificateState], now: datetime) -> Answer:
    """Answer one OCSP request.

    A malformed request gets ``malformedRequest``; an issuer we do not hold
    ``unauthorized`` (RFC 5019 2.2.3); a serial of ours is ``good`` only when it was
    issued, ``revoked`` with its time and reason, and ``unknown`` otherwise.
    """
    try:
        request = parse_request(request_der)
        issuer = find_issuer(request, issuers)
    except MalformedRequest:
        return Answer(error_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
    if issuer is None:
        return Answer(error_response(ocsp.OCSPResponseStatus.UNAUTHORIZED))
    return sign_answer(request, issuer, state_of(issuer.id, request.serial_number), now)
