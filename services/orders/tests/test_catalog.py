"""The product catalog: data loaded from catalog.json, listed to every user."""

from __future__ import annotations

import json

import pytest
from chancery_orders.catalog import CATALOG_FILE


def test_any_account_user_sees_the_products_with_prices_per_term_in_cents(harness):
    for role in ("limited", "finance", "unit_admin", "admin"):
        answer = harness.client.get("/api/orders/v1/products", headers=harness.headers(role))
        assert answer.status_code == 200
        assert answer.json["next_cursor"] is None
        products = {p["code"]: p for p in answer.json["items"]}
        assert set(products) == {"ssl_dv", "ssl_ov", "ssl_wildcard_dv",
                                 "ssl_multi_domain_ov", "private_tls"}
    assert products["ssl_dv"] | {"prices_cents": None} == {
        "code": "ssl_dv", "name": "Standard DV TLS", "validation_level": "dv", "max_sans": 2,
        "wildcard": False, "prices_cents": None, "included_sans": 2,
        "extra_san_prices_cents": None}
    assert set(products["ssl_dv"]["prices_cents"]) == {"1", "2", "3"}
    assert all(isinstance(v, int) for v in products["ssl_ov"]["prices_cents"].values())
    assert products["ssl_wildcard_dv"]["wildcard"] is True
    assert products["ssl_multi_domain_ov"]["max_sans"] == 250
    assert products["private_tls"]["validation_level"] == "private"


def test_products_need_a_token(harness):
    assert harness.client.get("/api/orders/v1/products").status_code == 401


def test_loading_the_catalog_again_changes_nothing(harness):
    assert harness.service.load_catalog() == []


def test_a_changed_catalog_file_updates_prices_and_withdraws_missing_products(harness,
                                                                              tmp_path):
    document = json.loads(CATALOG_FILE.read_text())
    document["products"] = [p for p in document["products"] if p["code"] != "private_tls"]
    document["products"][0]["prices_cents"]["1"] = 5900
    changed_file = tmp_path / "catalog.json"
    changed_file.write_text(json.dumps(document))

    assert sorted(harness.service.load_catalog(changed_file)) == ["private_tls", "ssl_dv"]

    items = harness.client.get("/api/orders/v1/products",
                               headers=harness.headers("limited")).json["items"]
    assert "private_tls" not in {p["code"] for p in items}
    assert next(p for p in items if p["code"] == "ssl_dv")["prices_cents"]["1"] == 5900
    assert harness.service.load_catalog() == ["ssl_dv", "private_tls"]  # back as shipped


@pytest.mark.parametrize("breakage", [
    lambda p: p.update(prices_cents={"1": 10.5}),
    lambda p: p.update(prices_cents={"4": 100}),
    lambda p: p.update(validation_level="gold"),
    lambda p: p.update(included_sans=3, max_sans=2),
    lambda p: p.pop("name"),
])
def test_a_broken_catalog_file_is_refused_as_a_whole(shared_harness, tmp_path, breakage):
    harness = shared_harness
    document = json.loads(CATALOG_FILE.read_text())
    document["products"][0]["prices_cents"]["1"] = 1  # a change that must not land
    breakage(document["products"][1])
    broken = tmp_path / "catalog.json"
    broken.write_text(json.dumps(document))

    with pytest.raises(ValueError, match="invalid product catalog"):
        harness.service.load_catalog(broken)
    items = harness.client.get("/api/orders/v1/products",
                               headers=harness.headers("limited")).json["items"]
    assert next(p for p in items if p["code"] == "ssl_dv")["prices_cents"]["1"] == 4900
