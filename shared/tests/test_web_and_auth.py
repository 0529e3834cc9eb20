"""The app factory (problems, request ids, client IP, auth by default) and token checks."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from chancery_shared.auth.policy import current_principal, public, require_role
from chancery_shared.auth.tokens import InvalidToken, TokenVerifier
from chancery_shared.testing import TokenFactory
from chancery_shared.web.app import TrustedProxies, client_ip, create_app
from flask_smorest import Blueprint
from marshmallow import Schema, fields


class Thing(Schema):
    name = fields.String(required=True)
    size = fields.Integer(required=True)


blp = Blueprint("things", __name__, url_prefix="/api/things/v1")


@blp.route("/things", methods=["POST"])
@blp.arguments(Thing)
@blp.response(201, Thing)
def create_thing(body):
    require_role("admin", permission="make_things")
    return body


@blp.route("/whoami")
def whoami():
    return {"user": current_principal().user_id, "ip": client_ip()}


@blp.route("/open")
@public
def open_view():
    return {"ok": True}


@pytest.fixture
def tokens():
    return TokenFactory()


@pytest.fixture
def client(tokens):
    verifier = TokenVerifier(tokens.jwks, issuer=tokens.issuer, audience=tokens.audience)
    app = create_app(service="things", api_name="things", title="t", description="d",
                     blueprints=[blp], verifier=verifier, trusted_proxies=["10.0.0.1"],
                     max_body_bytes=1000)
    return app.test_client()


def admin(tokens, **kw):
    return tokens.headers(role="admin", account_id="a1", **kw)


def test_routes_require_a_token_unless_public(client):
    r = client.get("/api/things/v1/whoami")
    assert r.status_code == 401
    assert r.content_type == "application/problem+json"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/things/v1/open").status_code == 200


def test_validation_errors_name_each_field(client, tokens):
    r = client.post("/api/things/v1/things", json={"size": "big"}, headers=admin(tokens))
    assert r.status_code == 422
    body = r.get_json()
    assert body["status"] == 422 and body["type"].endswith("validation_failed")
    assert set(body["errors"]) == {"name", "size"}


def test_forbidden_names_the_missing_permission(client, tokens):
    r = client.post("/api/things/v1/things", json={"name": "a", "size": 1},
                    headers=tokens.headers(role="limited", account_id="a1"))
    assert r.status_code == 403
    assert r.get_json()["missing_permission"] == "make_things"


@pytest.mark.parametrize("method, path, status", [
    ("get", "/api/things/v1/nowhere", 404),
    ("delete", "/api/things/v1/whoami", 405),
])
def test_framework_errors_are_problems(client, tokens, method, path, status):
    r = getattr(client, method)(path, headers=admin(tokens))
    assert r.status_code == status
    assert r.content_type == "application/problem+json"
    assert r.get_json()["status"] == status


def test_oversized_body_is_413(client, tokens):
    r = client.post("/api/things/v1/things", data="x" * 5000, headers=admin(tokens),
                    content_type="application/json")
    assert r.status_code == 413
    assert r.content_type == "application/problem+json"


def test_request_id_is_echoed_or_made(client):
    assert client.get("/api/things/healthz", headers={"X-Request-Id": "abc-1"}).headers[
        "X-Request-Id"] == "abc-1"
    made = client.get("/api/things/healthz", headers={"X-Request-Id": "bad id!"})
    assert made.headers["X-Request-Id"] != "bad id!" and len(made.headers["X-Request-Id"]) == 32


def test_health_readiness_metrics_and_openapi(client):
    assert client.get("/api/things/healthz").get_json()["status"] == "ok"
    assert client.get("/api/things/readyz").status_code == 200
    client.get("/api/things/healthz")
    assert b"chancery_http_requests_total" in client.get("/api/things/metrics").data
    spec = client.get("/api/things/openapi.json").get_json()
    assert "/api/things/v1/things" in spec["paths"]


@pytest.mark.parametrize("remote, forwarded, expected", [
    ("198.51.100.7", None, "198.51.100.7"),
    ("198.51.100.7", "1.2.3.4", "198.51.100.7"),        # not a trusted proxy: header ignored
    ("10.0.0.1", "1.2.3.4", "1.2.3.4"),
    ("10.0.0.1", "6.6.6.6, 1.2.3.4", "1.2.3.4"),        # spoofed leftmost hop is ignored
    ("10.0.0.1", "1.2.3.4, 10.0.0.1", "1.2.3.4"),
    ("10.0.0.1", "garbage", "10.0.0.1"),
])
def test_client_ip_trusts_forwarded_for_only_from_proxies(remote, forwarded, expected):
    assert TrustedProxies(["10.0.0.1"]).client_ip(remote, forwarded) == expected


def test_whoami_sees_the_forwarded_client(client, tokens):
    r = client.get("/api/things/v1/whoami", headers={**admin(tokens, user_id="u-9"),
                                                     "X-Forwarded-For": "192.0.2.44"},
                   environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert r.get_json() == {"user": "u-9", "ip": "192.0.2.44"}


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.mark.parametrize("case", ["expired", "not_yet_valid", "wrong_audience", "wrong_issuer",
                                  "alg_none", "hs256_with_public_key", "unknown_kid", "tampered",
                                  "garbage"])
def test_bad_tokens_are_refused(tokens, case):
    verifier = TokenVerifier(tokens.jwks, issuer=tokens.issuer, audience=tokens.audience,
                             refetch_interval=0)
    base = dict(role="admin", account_id="a1")
    if case == "expired":
        token = tokens.token(**base, lifetime=timedelta(seconds=-60))
    elif case == "not_yet_valid":
        import datetime as dt
        token = tokens.token(**base, nbf=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    elif case == "wrong_audience":
        token = tokens.token(**base, aud="someone-else")
    elif case == "wrong_issuer":
        token = tokens.token(**base, iss="evil")
    elif case == "alg_none":
        token = f"{_b64({'alg': 'none', 'kid': tokens.kid})}.{_b64({'sub': 'x', 'role': 'admin'})}."
    elif case == "hs256_with_public_key":
        import hashlib
        import hmac
        secret = tokens.jwks()["keys"][0]["x"].encode()  # the public key as an HMAC secret
        signing_input = (f"{_b64({'alg': 'HS256', 'kid': tokens.kid})}."
                         f"{_b64({'sub': 'x', 'role': 'admin'})}")
        sig = base64.urlsafe_b64encode(hmac.new(secret, signing_input.encode(),
                                                hashlib.sha256).digest()).decode().rstrip("=")
        token = f"{signing_input}.{sig}"
    elif case == "unknown_kid":
        token = TokenFactory().token(**base)
    elif case == "tampered":
        head, payload, sig = tokens.token(**base).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["role"] = "operator"
        token = f"{head}.{_b64(claims)}.{sig}"
    else:
        token = "not-a-jwt"
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_a_good_token_gives_the_principal(tokens):
    verifier = TokenVerifier(tokens.jwks, issuer=tokens.issuer, audience=tokens.audience)
    p = verifier.verify(tokens.token(role="unit_admin", account_id="a1", user_id="u1",
                                     unit_ids=("x",)))
    assert (p.user_id, p.role, p.account_id, p.unit_ids) == ("u1", "unit_admin", "a1", ("x",))
