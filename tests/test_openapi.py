"""Every service documents every public route in its generated OpenAPI document."""

from __future__ import annotations

import re

import pytest
from chancery_shared.service import service_classes
from chancery_shared.testing import make_runtime

#: Machine endpoints, and the API browser's page and files (a page about the API, not
#: part of it)
UNDOCUMENTED = re.compile(r"/(healthz|readyz|metrics|openapi\.json)$|^/api/docs(/|$)")


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    runtime = make_runtime(tmp_path_factory.mktemp("openapi"))
    services = {name: cls(runtime) for name, cls in service_classes().items()}
    yield {name: service.create_app() for name, service in services.items()}
    for service in services.values():
        service.dispose()


def flask_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


@pytest.mark.parametrize("name", ["identity", "orders", "ca-signer", "ledger", "audit"])
def test_every_route_is_in_the_openapi_document(apps, name):
    app = apps[name]
    client = app.test_client()
    api_name = "ca" if name == "ca-signer" else name
    response = client.get(f"/api/{api_name}/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or UNDOCUMENTED.search(rule.rule):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if (flask_to_openapi(rule.rule), method) not in documented:
                missing.append(f"{method} {rule.rule}")
    assert not missing, f"{name} routes missing from its OpenAPI document: {missing}"
