"""The service's shape: entry point, OpenAPI document, health, configuration."""

from __future__ import annotations

import pytest
from chancery_ledger.service import LedgerService
from chancery_shared import config as cfg
from chancery_shared.service import service_classes
from chancery_shared.testing import make_runtime


def test_the_ledger_is_registered_as_a_chancery_service():
    assert service_classes()["ledger"] is LedgerService
    assert (LedgerService.name, LedgerService.api_name) == ("ledger", "ledger")


def test_the_openapi_document_describes_every_endpoint(client):
    spec = client.get("/api/ledger/openapi.json").json
    assert {"/api/ledger/v1/balance", "/api/ledger/v1/deposits",
            "/api/ledger/v1/deposits/{deposit_id}/settle", "/api/ledger/v1/transactions",
            "/api/ledger/v1/receipts/{receipt_id}"} <= set(spec["paths"])
    card = spec["components"]["schemas"]["CardInput"]["properties"]
    assert card["number"]["writeOnly"] is True  # never echoed back


def test_health_and_readiness(client):
    assert client.get("/api/ledger/healthz").json["status"] == "ok"
    assert client.get("/api/ledger/readyz").json["checks"] == {"database": "ok", "broker": "ok"}


def test_an_unknown_payment_processor_refuses_to_start(tmp_path):
    with pytest.raises(cfg.ConfigError, match="CHANCERY_LEDGER_PAYMENT_PROCESSOR"):
        LedgerService(make_runtime(tmp_path, CHANCERY_LEDGER_PAYMENT_PROCESSOR="acme"))
