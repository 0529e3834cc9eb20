"""In production, ca-signer refuses to start on a public base URL relying parties could
not reach: the CRL, OCSP and caIssuers URLs of every public certificate live under it."""

from __future__ import annotations

import pytest
from chancery_ca_signer.service import CaSignerService
from chancery_shared.config import ConfigError
from chancery_shared.testing import make_runtime

PRODUCTION = {"CHANCERY_BROKER_URL": "amqp://chancery:secret@127.0.0.1:5672//"}


@pytest.mark.parametrize("url", [
    None,  # the documented default, http://pki.example.com
    "http://pki.chancery.test", "https://ca.corp", "http://10.0.0.5", "http://127.0.0.1:8080",
    "http://pki", "http://crl.example.net", "ftp://pki.chancery.io",
])
def test_production_refuses_an_internal_or_reserved_public_base_url(tmp_path, url):
    env = dict(PRODUCTION, **({"CHANCERY_PUBLIC_BASE_URL": url} if url else {}))
    with pytest.raises(ConfigError) as refused:
        CaSignerService(make_runtime(tmp_path, **env))
    assert list(refused.value.problems) == ["CHANCERY_PUBLIC_BASE_URL"]
    assert "relying party" in refused.value.problems["CHANCERY_PUBLIC_BASE_URL"]


def test_production_starts_on_a_public_name(tmp_path):
    service = CaSignerService(make_runtime(
        tmp_path, **PRODUCTION, CHANCERY_PUBLIC_BASE_URL="https://pki.chancery.io"))
    service.dispose()


@pytest.mark.parametrize("env", [
    pytest.param({}, id="embedded (in-memory bus)"),
    pytest.param(dict(PRODUCTION, CHANCERY_DEV_BOOTSTRAP="true"), id="development deployment"),
])
def test_development_keeps_the_documented_placeholder(tmp_path, env):
    service = CaSignerService(make_runtime(tmp_path, **env))
    assert service.settings.public_base_url == "http://pki.example.com"
    service.dispose()
