"""The same rules on PostgreSQL: row locks, time types and deletes differ from SQLite."""

from __future__ import annotations

import pytest
from chancery_identity.model import metadata
from chancery_identity.testing import API, bearer, build_test_service, outbox, sign_in
from sqlalchemy import create_engine, text

WRONG = "definitely-not-it-42"


@pytest.fixture
def pg_service(request, tmp_path):
    env = request.getfixturevalue("infrastructure")
    url = env["CHANCERY_IDENTITY_DATABASE_URL"]
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def wipe():
        with engine.begin() as connection:
            metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))

    wipe()
    service = build_test_service(tmp_path, CHANCERY_IDENTITY_DATABASE_URL=url)
    yield service
    service.dispose()
    wipe()
    engine.dispose()


@pytest.mark.distributed
def test_sign_in_rules_hold_on_postgresql(pg_service):
    service, client = pg_service, pg_service.create_app().test_client()
    clock = service.clock
    admin = sign_in(client, "admin@example.com").get_json()
    headers = bearer(admin["access_token"])
    r = client.post(f"{API}/users", headers=headers, json={
        "email": "lee@example.com", "name": "Lee", "role": "limited",
        "password": "granite-meadow-falcon"})
    assert r.status_code == 201
    lee = r.get_json()["id"]

    for _ in range(5):  # lockout, then its end
        assert sign_in(client, "lee@example.com", WRONG).status_code == 401
    assert client.get(f"{API}/users/{lee}", headers=headers).get_json()["locked_until"]
    assert client.post(f"{API}/users/{lee}/unlock", headers=headers).status_code == 200
    session = sign_in(client, "lee@example.com", "granite-meadow-falcon").get_json()

    first = client.post(f"{API}/sessions/refresh",  # rotation and reuse detection
                        json={"refresh_token": session["refresh_token"]})
    assert first.status_code == 200
    assert client.post(f"{API}/sessions/refresh", json={
        "refresh_token": session["refresh_token"]}).status_code == 401
    assert client.post(f"{API}/sessions/refresh", json={
        "refresh_token": first.get_json()["refresh_token"]}).status_code == 401

    for i in range(20):  # throttling by address
        sign_in(client, f"x{i}@example.com", WRONG, ip="198.51.100.1")
    r = sign_in(client, "lee@example.com", "granite-meadow-falcon", ip="198.51.100.1")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0

    r = client.patch(f"{API}/users/{lee}", headers=headers, json={"active": False})
    assert r.status_code == 200
    assert client.delete(f"{API}/sessions/current", headers=headers).status_code == 204

    key = service.rotate_signing_key(immediately=True)
    clock.advance(hours=30)
    service.purge()
    with service.uow() as uow:
        assert service.tokens.jwks(uow.session, clock())["keys"][0]["kid"] == key.kid
    types = {e["type"] for e in outbox(service)}
    assert {"identity.login.failed", "identity.user.unlocked", "identity.session.ended",
            "identity.user.deactivated", "identity.signing_key.rotated"} <= types
