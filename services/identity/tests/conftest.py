import pytest
from chancery_identity.service import IdentityService
from chancery_shared.testing import make_runtime


@pytest.fixture
def service(tmp_path):
    svc = IdentityService(make_runtime(tmp_path, CHANCERY_DEV_PASSWORD="correct-horse-battery"))
    # identity verifies its own tokens through its own JWKS document
    svc.runtime.jwks_fetcher = lambda: client_jwks(svc)
    svc.migrate()
    svc.bootstrap_dev()
    yield svc
    svc.dispose()


def client_jwks(svc):
    from chancery_identity.credentials import TokenIssuer

    with svc.uow() as uow:
        return TokenIssuer.jwks(uow.session)


@pytest.fixture
def client(service):
    return service.create_app().test_client()


@pytest.fixture
def login():
    def sign_in(client, email, password="correct-horse-battery"):
        r = client.post("/api/identity/v1/sessions", json={"email": email, "password": password})
        assert r.status_code == 201, r.get_json()
        return {"Authorization": f"Bearer {r.get_json()['access_token']}"}

    return sign_in


@pytest.fixture
def jwks(service):
    return lambda: client_jwks(service)
