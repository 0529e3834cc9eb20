"""Access tokens, their rotating signing keys, API keys, and the operators' command line."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import timedelta

import jwt
import pytest
from chancery_identity import cli
from chancery_identity.model import ApiKey, SigningKey
from chancery_identity.testing import API, bearer, outbox, sign_in
from chancery_identity.testing import TEST_PASSWORD as PASSWORD
from chancery_shared.auth.tokens import InvalidToken, TokenVerifier
from sqlalchemy import select


def verifier(jwks):
    return TokenVerifier(jwks, issuer="chancery-identity", audience="chancery",
                         refetch_interval=0)


def kid_of(token):
    return jwt.get_unverified_header(token)["kid"]


def kids(jwks):
    return [k["kid"] for k in jwks()["keys"]]


def token_for(client, email="admin@example.com"):
    r = sign_in(client, email)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["access_token"]


# --- access tokens -----------------------------------------------------------------------


def test_an_access_token_carries_what_every_service_needs(client, jwks):
    token = token_for(client)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "email", "name", "role", "acct",
            "units", "typ", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 600  # short: deactivation reaches everyone in 10'
    principal = verifier(jwks).verify(token)
    assert principal.session_id == claims["sid"] and principal.role == "admin"


def _forge(token, **changes):
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{raw}.{signature}"


@pytest.mark.parametrize("attack", [
    "expired", "not_yet_valid", "wrong_audience", "alg_none", "hs256_with_public_key",
    "unknown_kid", "tampered_payload",
])
def test_forged_or_stale_tokens_are_refused(service, client, clock, jwks, attack):
    good = token_for(client)
    public = jwks()["keys"][0]
    if attack == "expired":
        clock.advance(minutes=-20)
        token = token_for(client)
    elif attack == "not_yet_valid":
        clock.advance(minutes=2)
        token = token_for(client)
    elif attack == "wrong_audience":
        service.tokens.audience = "somebody-else"
        token = token_for(client)
    elif attack == "alg_none":
        claims = jwt.decode(good, options={"verify_signature": False})
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": public["kid"]})
    elif attack == "hs256_with_public_key":
        claims = jwt.decode(good, options={"verify_signature": False})
        header = base64.urlsafe_b64encode(json.dumps(
            {"alg": "HS256", "typ": "JWT", "kid": public["kid"]}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        import hmac

        signature = base64.urlsafe_b64encode(hmac.new(
            public["x"].encode(), header + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
        token = b".".join([header, body, signature]).decode()
    elif attack == "unknown_kid":
        header = base64.urlsafe_b64encode(json.dumps(
            {"alg": "EdDSA", "typ": "JWT", "kid": "not-a-key"}).encode()).rstrip(b"=").decode()
        token = header + good[good.index("."):]
    else:
        token = _forge(good, role="operator")
    with pytest.raises(InvalidToken):
        verifier(jwks).verify(token)
    assert client.get(f"{API}/me", headers=bearer(token)).status_code == 401
    assert client.get(f"{API}/me", headers=bearer(good)).status_code == 200


# --- signing-key rotation ----------------------------------------------------------------


def test_a_rotated_key_is_published_before_it_signs_and_the_old_one_until_its_tokens_expire(
        service, client, clock, jwks):
    clock.advance(minutes=-6)  # so that tokens signed 5' later are valid in real time
    old_token = token_for(client)
    old_kid = kid_of(old_token)
    new_key = service.rotate_signing_key()
    assert kids(jwks) == [old_kid, new_key.kid]  # published ahead ...
    assert kid_of(token_for(client)) == old_kid  # ... and not signing yet
    clock.advance(minutes=5, seconds=1)
    newer_token = token_for(client)
    assert kid_of(newer_token) == new_key.kid
    assert verifier(jwks).verify(old_token).email == "admin@example.com"
    assert verifier(jwks).verify(newer_token).email == "admin@example.com"
    # the last token the old key signed expires 10 minutes after the switch (1 s ago),
    # then a minute of grace
    clock.advance(minutes=10, seconds=58)
    assert kids(jwks) == [old_kid, new_key.kid]
    clock.advance(seconds=2)
    assert kids(jwks) == [new_key.kid]
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier(jwks).verify(old_token)
    [event] = outbox(service, "identity.signing_key.rotated")
    assert event["data"]["previous_kid"] == old_kid and event["account_id"] is None


def test_the_key_rotates_by_itself_when_it_is_thirty_days_old(service, client, clock, jwks):
    first = kid_of(token_for(client))
    clock.advance(days=29, hours=23)
    assert kid_of(token_for(client)) == first and len(kids(jwks)) == 1
    clock.advance(hours=2)
    assert kid_of(token_for(client)) == first  # due: the successor is published first
    assert len(kids(jwks)) == 2
    token_for(client)  # a second issuance schedules nothing more
    assert len(kids(jwks)) == 2 and len(outbox(service, "identity.signing_key.rotated")) == 1
    clock.advance(minutes=6)
    assert kid_of(token_for(client)) != first


def test_an_immediate_rotation_signs_at_once_and_housekeeping_deletes_dead_keys(
        service, client, clock, jwks):
    first = kid_of(token_for(client))
    new = service.rotate_signing_key(immediately=True)
    assert kid_of(token_for(client)) == new.kid
    clock.advance(minutes=12)
    service.purge()
    with service.uow() as uow:
        assert [k.kid for k in uow.session.execute(select(SigningKey)).scalars()] == [new.kid]
    assert first not in kids(jwks)


def test_private_keys_are_encrypted_at_rest(service, client):
    token_for(client)
    with service.uow() as uow:
        pem = uow.session.execute(select(SigningKey.private_key_pem)).scalar_one()
    assert pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")


# --- API keys ----------------------------------------------------------------------------


def test_api_key_lifecycle(service, client, people):
    mine = people.headers["limited_emea"]
    r = client.post(f"{API}/api-keys", headers=mine, json={"name": "deploy script"})
    assert r.status_code == 201
    created = r.get_json()
    key = created["key"]
    assert re.fullmatch(r"chy_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key)
    assert key.startswith(f"chy_{created['prefix']}_")
    assert len(base64.urlsafe_b64decode(key[13:] + "=")) == 32  # 256 random bits
    with service.uow() as uow:  # only its hash is kept
        row = uow.session.get(ApiKey, created["id"])
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key not in json.dumps([row.key_hash, row.prefix, row.name])

    listed = client.get(f"{API}/api-keys", headers=mine).get_json()["items"]
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    assert listed[0]["last_used_at"] is None

    r = client.post(f"{API}/sessions", json={"api_key": key},
                    environ_base={"REMOTE_ADDR": "192.0.2.55"})
    assert r.status_code == 201
    body = r.get_json()
    assert "refresh_token" not in body and body["session_id"] is None
    assert client.get(f"{API}/me", headers=bearer(body["access_token"])).get_json()[
        "email"] == "limited_emea@example.com"
    assert client.get(f"{API}/api-keys", headers=mine).get_json()["items"][0]["last_used_at"]
    session = outbox(service, "identity.session.created")[-1]
    assert session["data"]["method"] == "api_key" and session["actor"]["ip"] == "192.0.2.55"

    assert client.delete(f"{API}/api-keys/{created['id']}", headers=mine).status_code == 204
    assert client.post(f"{API}/sessions", json={"api_key": key}).status_code == 401
    assert client.get(f"{API}/api-keys", headers=mine).get_json()["items"][0]["revoked_at"]
    assert failures_of(service)[-1]["data"]["reason"] == "revoked_key"
    assert client.delete(f"{API}/api-keys/{created['id']}", headers=mine).status_code == 204
    types = [e["type"] for e in outbox(service) if e["type"].startswith("identity.api_key")]
    assert types == ["identity.api_key.created", "identity.api_key.revoked"]


def failures_of(service):
    return outbox(service, "identity.login.failed")


def test_api_keys_are_private_to_their_owner(client, people):
    r = client.post(f"{API}/api-keys", headers=people.headers["limited_emea"],
                    json={"name": "mine"})
    key_id = r.get_json()["id"]
    admin = people.headers["admin"]
    assert client.get(f"{API}/api-keys", headers=admin).get_json()["items"] == []
    assert client.delete(f"{API}/api-keys/{key_id}", headers=admin).status_code == 404


@pytest.mark.parametrize("key", ["", "chy_short", "chy_00000000_" + "A" * 43, "x" * 200])
def test_a_wrong_api_key_is_401_and_audited(service, client, key):
    r = client.post(f"{API}/sessions", json={"api_key": key})
    assert r.status_code == 401 and r.get_json()["code"] == "invalid_credentials"
    assert failures_of(service)[-1]["data"] == {
        "user_id": None, "email": None, "method": "api_key", "reason": "bad_credentials",
        "locked_until": None}


def test_the_operator_may_hold_api_keys(client, login):
    operator = login(client, "operator@chancery.local")
    key = client.post(f"{API}/api-keys", headers=operator, json={"name": "ops"}).get_json()
    r = client.post(f"{API}/sessions", json={"api_key": key["key"]})
    assert r.status_code == 201
    me = client.get(f"{API}/me", headers=bearer(r.get_json()["access_token"])).get_json()
    assert me["role"] == "operator" and me["account_id"] is None


@pytest.mark.parametrize("body", [
    {"api_key": "chy_x", "email": "a@example.com"}, {"email": "a@example.com"}, {},
    {"password": "x"},
])
def test_a_sign_in_needs_exactly_one_method(client, body):
    assert client.post(f"{API}/sessions", json=body).status_code == 422


# --- the command line --------------------------------------------------------------------


@pytest.fixture
def environment(service, monkeypatch):
    monkeypatch.setenv("CHANCERY_IDENTITY_DATABASE_URL", service.database_url)
    monkeypatch.setenv("CHANCERY_PASSWORD_HASH_PROFILE", "fast")
    monkeypatch.setenv("CHANCERY_BROKER_URL", "memory://")


def test_the_command_line_creates_an_operator_with_a_strong_password(
        service, client, environment, monkeypatch, capsys):
    monkeypatch.setenv("CHANCERY_OPERATOR_PASSWORD", "password1234")
    assert cli.main(["create-operator", "--email", "ops@ca.example", "--name", "Ops"]) == 1
    assert "most commonly used" in capsys.readouterr().err
    monkeypatch.setenv("CHANCERY_OPERATOR_PASSWORD", "granite-meadow-falcon")
    assert cli.main(["create-operator", "--email", "ops@ca.example", "--name", "Ops"]) == 0
    r = sign_in(client, "ops@ca.example", "granite-meadow-falcon")
    assert r.status_code == 201
    me = client.get(f"{API}/me", headers=bearer(r.get_json()["access_token"])).get_json()
    assert me["role"] == "operator"
    event = outbox(service, "identity.user.created")[-1]
    assert event["actor"] == {"system": "identity-cli"}


def test_the_command_line_unlocks_and_rotates(service, client, environment, people, jwks):
    for _ in range(5):
        sign_in(client, "limited_emea@example.com", "definitely-not-it-42")
    assert cli.main(["unlock", "--email", "limited_emea@example.com"]) == 0
    assert sign_in(client, "limited_emea@example.com", PASSWORD).status_code == 201
    assert cli.main(["unlock", "--email", "nobody@example.com"]) == 1
    before = kids(jwks)
    assert cli.main(["rotate-signing-key"]) == 0
    assert len(kids(jwks)) == len(before) + 1


def test_jwks_is_public_and_cacheable(client):
    token_for(client)
    r = client.get("/api/identity/.well-known/jwks.json")
    assert r.status_code == 200 and "max-age=60" in r.headers["Cache-Control"]
    [key] = r.get_json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" not in key


def test_the_access_token_lifetime_is_bounded(tmp_path):
    from chancery_identity.service import IdentityService
    from chancery_shared.config import ConfigError
    from chancery_shared.testing import make_runtime

    with pytest.raises(ConfigError, match="CHANCERY_ACCESS_TOKEN_SECONDS"):
        IdentityService(make_runtime(tmp_path, CHANCERY_ACCESS_TOKEN_SECONDS="86400"))
    assert timedelta(seconds=600) == IdentityService(make_runtime(tmp_path)).tokens.lifetime
