import shutil
from dataclasses import dataclass, field

import pytest
from chancery_identity.testing import (
    API,
    TEST_PASSWORD,
    bearer,
    build_test_service,
    jwks_of,
    sign_in,
)

PASSWORD = TEST_PASSWORD


def _build(var_dir):
    return build_test_service(var_dir)


def _freeze(svc, var_dir):
    """Close every connection: SQLite then folds its write-ahead log into the file."""
    svc.dispose()
    assert not (var_dir / "identity.db-wal").exists(), "a connection is still open"
    return var_dir / "identity.db"


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    """Databases built once and copied into each test: the seed alone, and with people."""
    bare_dir = tmp_path_factory.mktemp("bare")
    bare = _freeze(_build(bare_dir), bare_dir)
    people_dir = tmp_path_factory.mktemp("people")
    svc = _build(people_dir)
    crowd = _populate(People(svc.create_app().test_client()))
    return {"bare": bare, "people": (_freeze(svc, people_dir), crowd)}


@pytest.fixture
def service(request, tmp_path, templates):
    if "people" in request.fixturenames:
        source, _ = templates["people"]
    else:
        source = templates["bare"]
    shutil.copyfile(source, tmp_path / "identity.db")
    svc = _build(tmp_path)
    yield svc
    svc.dispose()


@pytest.fixture
def clock(service):
    return service.clock


@pytest.fixture
def client(service):
    return service.create_app().test_client()


@pytest.fixture
def login():
    def signed_in(client, email, password=PASSWORD):
        r = sign_in(client, email, password)
        assert r.status_code == 201, r.get_json()
        return bearer(r.get_json()["access_token"])

    return signed_in


@pytest.fixture
def jwks(service):
    return lambda: jwks_of(service)


@dataclass
class People:
    """Example Corp with two units and one user of each kind (see the ``people`` fixture)."""

    client: object
    ids: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)

    def add(self, key, role, units, *, password=PASSWORD):
        admin = self.headers["admin"]
        r = self.client.post(f"{API}/users", headers=admin, json={
            "email": f"{key}@example.com", "name": key.replace("_", " ").title(), "role": role,
            "unit_ids": [self.units[u] for u in units], "password": password})
        assert r.status_code == 201, r.get_json()
        self.ids[key] = r.get_json()["id"]
        return self.ids[key]

    def sign_in(self, key):
        r = sign_in(self.client, f"{key}@example.com")
        assert r.status_code == 201, r.get_json()
        self.headers[key] = bearer(r.get_json()["access_token"])
        return self.headers[key]

    def patch(self, actor, target, body):
        return self.client.patch(f"{API}/users/{self.ids[target]}", headers=self.headers[actor],
                                 json=body)


def _populate(p):
    client = p.client
    r = sign_in(client, "admin@example.com")
    assert r.status_code == 201, r.get_json()
    p.headers["admin"] = bearer(r.get_json()["access_token"])
    p.ids["admin"] = client.get(f"{API}/me", headers=p.headers["admin"]).get_json()["id"]
    for name in ("EMEA", "APAC"):
        r = client.post(f"{API}/units", headers=p.headers["admin"], json={"name": name})
        assert r.status_code == 201, r.get_json()
        p.units[name] = r.get_json()["id"]
    p.add("admin2", "admin", [])
    p.add("unit_admin_emea", "unit_admin", ["EMEA"])
    p.add("unit_admin_apac", "unit_admin", ["APAC"])
    p.add("limited_emea", "limited", ["EMEA"])
    p.add("limited_apac", "limited", ["APAC"])
    p.add("finance_emea", "finance", ["EMEA"])
    p.add("admin_in_emea", "admin", ["EMEA"])
    p.add("limited_both", "limited", ["EMEA", "APAC"])
    for key in ("unit_admin_emea", "unit_admin_apac", "limited_emea", "admin2"):
        p.sign_in(key)
    return p


@pytest.fixture
def people(client, templates):
    """Example Corp with units EMEA and APAC and one user of each kind, signed in where
    ``headers`` has them (a copy of a database built once per run)."""
    _, crowd = templates["people"]
    return People(client, dict(crowd.ids), dict(crowd.units), dict(crowd.headers))


@pytest.fixture
def globex(client, login):
    """A second customer account with its own admin (headers)."""
    operator = login(client, "operator@chancery.local")
    r = client.post(f"{API}/accounts", headers=operator, json={
        "name": "Globex", "admin_email": "root@globex.com", "admin_name": "Hank",
        "admin_password": "harbour-lantern-42"})
    assert r.status_code == 201, r.get_json()
    return login(client, "root@globex.com", "harbour-lantern-42")
