"""Idempotency-Key on creating POSTs: a repeat returns the first answer, once."""

from __future__ import annotations

import pytest
from chancery_identity.service import IdentityService
from chancery_identity.testing import bearer, build_test_service, sign_in
from chancery_shared.web.idempotency import HEADER
from sqlalchemy import func, select


@pytest.fixture
def identity(tmp_path):
    service: IdentityService = build_test_service(tmp_path)
    yield service
    service.dispose()


def test_a_repeat_returns_the_first_response_and_creates_once(identity):
    client = identity.create_app().test_client()
    admin = bearer(sign_in(client, "admin@example.com").get_json()["access_token"])
    headers = {**admin, HEADER: "unit-create-1"}
    first = client.post("/api/identity/v1/units", json={"name": "Payments"}, headers=headers)
    again = client.post("/api/identity/v1/units", json={"name": "Payments"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    units = client.get("/api/identity/v1/units", headers=admin).get_json()["items"]
    assert [u["name"] for u in units].count("Payments") == 1


def test_the_same_key_with_another_body_is_refused(identity):
    client = identity.create_app().test_client()
    admin = bearer(sign_in(client, "admin@example.com").get_json()["access_token"])
    headers = {**admin, HEADER: "unit-create-2"}
    assert client.post("/api/identity/v1/units", json={"name": "A"},
                       headers=headers).status_code == 201
    second = client.post("/api/identity/v1/units", json={"name": "B"}, headers=headers)
    assert second.status_code == 422
    assert HEADER in second.get_json()["errors"]


def test_a_failed_attempt_frees_the_key_and_passwords_are_not_fingerprinted(identity):
    client = identity.create_app().test_client()
    admin = bearer(sign_in(client, "admin@example.com").get_json()["access_token"])
    headers = {**admin, HEADER: "user-create-1"}
    body = {"email": "new.person@example.com", "name": "New Person", "role": "limited",
            "password": "short"}
    assert client.post("/api/identity/v1/users", json=body, headers=headers).status_code == 422
    body["password"] = "Juniper-Anchor-Violin-62"
    assert client.post("/api/identity/v1/users", json=body, headers=headers).status_code == 201
    table = identity.messaging.idempotency
    with identity.uow() as uow:
        rows = uow.session.execute(select(table)).all()
        assert uow.session.execute(select(func.count()).select_from(table)).scalar_one() == 1
    assert all("Juniper" not in str(tuple(row)) for row in rows)


def test_a_claim_orphaned_by_a_dead_attempt_is_taken_over_after_the_lease(identity):
    """An attempt that lost its database cannot release its claim: a retry must not get
    409 "in progress" forever (the fault runs saw it after a PostgreSQL restart)."""
    from datetime import timedelta

    from chancery_shared.messaging.envelope import utcnow
    from chancery_shared.web.idempotency import CLAIM_LEASE, fingerprint
    from sqlalchemy import insert

    client = identity.create_app().test_client()
    admin = bearer(sign_in(client, "admin@example.com").get_json()["access_token"])
    me = client.get("/api/identity/v1/me", headers=admin).get_json()
    table = identity.messaging.idempotency
    body = {"name": "Orphaned"}
    for key, age in (("orphan-fresh", timedelta(0)), ("orphan-stale", CLAIM_LEASE * 2)):
        with identity.uow() as uow:  # what a request that died mid-way leaves behind
            uow.session.execute(insert(table).values(
                principal=me["id"], key=key, method="POST", path="/api/identity/v1/units",
                request_hash=fingerprint(body), created_at=utcnow() - age))
            uow.commit()
    fresh = client.post("/api/identity/v1/units", json=body,
                        headers={**admin, HEADER: "orphan-fresh"})
    assert fresh.status_code == 409  # may still be running: a twin must wait
    stale = client.post("/api/identity/v1/units", json=body,
                        headers={**admin, HEADER: "orphan-stale"})
    assert stale.status_code == 201, stale.get_json()
    again = client.post("/api/identity/v1/units", json=body,
                        headers={**admin, HEADER: "orphan-stale"})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    units = client.get("/api/identity/v1/units", headers=admin).get_json()["items"]
    assert [u["name"] for u in units].count("Orphaned") == 1
