"""identity: sign-in, tokens, users and units as the walking skeleton needs them."""

from __future__ import annotations

import pytest
from chancery_identity.model import User
from chancery_identity.sign_in import BAD_CREDENTIALS
from chancery_shared.auth.tokens import TokenVerifier
from sqlalchemy import select


def outbox_types(service):
    with service.uow() as uow:
        rows = uow.session.execute(select(service.messaging.outbox.c.type,
                                          service.messaging.outbox.c.body)).all()
    return rows


def test_development_bootstrap_seeds_operator_and_example_corp_once(service):
    service.bootstrap_dev()
    with service.uow() as uow:
        users = {u.email: u for u in uow.session.execute(select(User)).scalars()}
        assert users["operator@chancery.local"].role == "operator"
        assert users["operator@chancery.local"].account_id is None
        assert users["admin@example.com"].role == "admin"
        assert users["admin@example.com"].password_hash.startswith("$argon2id$")
        assert len(users) == 2


def test_login_issues_an_eddsa_token_that_verifies_against_the_jwks(service, client, jwks):
    r = client.post("/api/identity/v1/sessions",
                    json={"email": "Admin@Example.com", "password": "quiet-lantern-harbour"})
    assert r.status_code == 201
    body = r.get_json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 900
    verifier = TokenVerifier(jwks, issuer="chancery-identity",
                             audience="chancery")
    principal = verifier.verify(body["access_token"])
    assert principal.email == "admin@example.com" and principal.role == "admin"
    me = client.get("/api/identity/v1/me",
                    headers={"Authorization": f"Bearer {body['access_token']}"}).get_json()
    assert me["email"] == "admin@example.com" and me["account_id"] == principal.account_id


@pytest.mark.parametrize("email, password", [
    ("admin@example.com", "wrong-password-123"),
    ("nobody@example.com", "quiet-lantern-harbour"),
])
def test_bad_credentials_get_the_same_401_and_an_audited_failure(service, client, email,
                                                                 password):
    r = client.post("/api/identity/v1/sessions", json={"email": email, "password": password},
                    environ_base={"REMOTE_ADDR": "198.51.100.23"})
    assert r.status_code == 401
    assert r.get_json()["detail"] == BAD_CREDENTIALS
    failures = [body for type_, body in outbox_types(service) if type_ == "identity.login.failed"]
    assert len(failures) == 1 and "198.51.100.23" in failures[0]


def test_admin_creates_a_limited_user_who_can_sign_in(client, login):
    admin = login(client, "admin@example.com")
    r = client.post("/api/identity/v1/users", headers=admin, json={
        "email": "lee@example.com", "name": "Lee Park", "role": "limited",
        "password": "a-long-enough-password"})
    assert r.status_code == 201, r.get_json()
    assert "password" not in r.get_json()
    lee = login(client, "lee@example.com", "a-long-enough-password")
    assert client.get("/api/identity/v1/me", headers=lee).get_json()["role"] == "limited"
    assert client.get("/api/identity/v1/users", headers=lee).status_code == 403


@pytest.mark.parametrize("body, field", [
    ({"email": "x@example.com", "name": "X", "role": "emperor", "password": "long-password-1"},
     "role"),
    ({"email": "not-an-email", "name": "X", "role": "limited", "password": "long-password-1"},
     "email"),
    ({"email": "x@example.com", "name": "X", "role": "limited", "password": "short"}, "password"),
    ({"email": "x@example.com", "name": "", "role": "limited", "password": "long-password-1"},
     "name"),
    ({"email": "x@example.com", "name": "X", "role": "limited", "password": "long-password-1",
      "unit_ids": ["no-such-unit"]}, "unit_ids"),
])
def test_user_creation_validation_names_the_field(client, body, field, login):
    r = client.post("/api/identity/v1/users", headers=login(client, "admin@example.com"),
                    json=body)
    assert r.status_code == 422
    assert field in r.get_json()["errors"]


def test_duplicate_email_is_a_conflict(client, login):
    admin = login(client, "admin@example.com")
    body = {"email": "dup@example.com", "name": "D", "role": "finance",
            "password": "long-password-1"}
    assert client.post("/api/identity/v1/users", headers=admin, json=body).status_code == 201
    assert client.post("/api/identity/v1/users", headers=admin, json=body).status_code == 409


def test_unit_admin_cannot_create_an_admin_or_users_outside_their_units(client, login):
    admin = login(client, "admin@example.com")
    unit = client.post("/api/identity/v1/units", headers=admin, json={"name": "EMEA"}).get_json()
    other = client.post("/api/identity/v1/units", headers=admin, json={"name": "APAC"}).get_json()
    client.post("/api/identity/v1/users", headers=admin, json={
        "email": "ua@example.com", "name": "UA", "role": "unit_admin", "unit_ids": [unit["id"]],
        "password": "long-password-1"})
    ua = login(client, "ua@example.com", "long-password-1")
    make = lambda role, units: client.post("/api/identity/v1/users", headers=ua, json={  # noqa: E731
        "email": f"{role}-{len(units)}@example.com", "name": "N", "role": role,
        "unit_ids": units, "password": "long-password-1"})
    assert make("admin", [unit["id"]]).status_code == 403
    assert make("limited", [other["id"]]).status_code == 403
    assert make("limited", [unit["id"]]).status_code == 201


def test_operator_opens_a_customer_account(client, login):
    operator = login(client, "operator@chancery.local")
    r = client.post("/api/identity/v1/accounts", headers=operator, json={
        "name": "Globex", "admin_email": "root@globex.com", "admin_name": "Hank",
        "admin_password": "harbour-lantern-42"})
    assert r.status_code == 201
    globex = login(client, "root@globex.com", "harbour-lantern-42")
    users = client.get("/api/identity/v1/users", headers=globex).get_json()["items"]
    assert [u["email"] for u in users] == ["root@globex.com"]  # Example Corp is invisible
    admin = login(client, "admin@example.com")
    assert client.post("/api/identity/v1/accounts", headers=admin, json={
        "name": "Nope", "admin_email": "n@nope.com", "admin_name": "N",
        "admin_password": "nope-password-1"}).status_code == 403


def test_another_accounts_user_is_not_found(client, login):
    operator = login(client, "operator@chancery.local")
    client.post("/api/identity/v1/accounts", headers=operator, json={
        "name": "Globex", "admin_email": "root@globex.com", "admin_name": "Hank",
        "admin_password": "harbour-lantern-42"})
    globex = login(client, "root@globex.com", "harbour-lantern-42")
    admin = login(client, "admin@example.com")
    example_admin_id = client.get("/api/identity/v1/me", headers=admin).get_json()["id"]
    assert client.get(f"/api/identity/v1/users/{example_admin_id}",
                      headers=globex).status_code == 404
