"""Domain validation and CAA through the gateway, against the loopback DNS server."""

from __future__ import annotations

import uuid

import pytest
from chancery_shared.testing import wait_for

from tests.conftest import PASSWORD
from tests.e2e.scenario import SETTLING_CARD, Api, expect, p256_csr, validate_by_dns

pytestmark = pytest.mark.e2e
STRONG = "Harbour-Lilac-Compass-27"


def new_account(base_url: str) -> tuple[Api, Api]:
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", PASSWORD)
    tag = uuid.uuid4().hex[:8]
    expect(operator.post("/api/identity/v1/accounts", {
        "name": f"Validation {tag}", "admin_email": f"admin-{tag}@validation.com",
        "admin_name": "Validation Admin", "admin_password": STRONG}), 201)
    return anonymous.login(f"admin-{tag}@validation.com", STRONG), operator


def test_a_published_txt_record_validates_the_domain_and_is_kept_as_evidence(stack,
                                                                            loopback_dns):
    admin, _ = new_account(stack.base_url)
    name = f"v{uuid.uuid4().hex[:10]}.example.com"
    domain = expect(admin.post("/api/orders/v1/domains", {"name": name, "method": "dns-txt"}),
                    201)
    checked = expect(admin.post(f"/api/orders/v1/domains/{domain['id']}/check", {}), 200)
    assert checked["status"] != "validated"  # nothing published yet

    loopback_dns.publish(f"_chancery-challenge.{name}", "TXT", f'"{domain["token"]}"')
    checked = expect(admin.post(f"/api/orders/v1/domains/{domain['id']}/check", {}), 200)
    assert checked["status"] == "validated", checked
    attempts = expect(admin.get(f"/api/orders/v1/domains/{domain['id']}/attempts"),
                      200)["items"]
    assert len(attempts) == 2
    assert attempts[0]["outcome"] == "validated"
    assert domain["token"] in attempts[0]["answer"]


def test_caa_naming_another_ca_stops_the_order_and_releases_the_money(stack, loopback_dns):
    admin, _ = new_account(stack.base_url)
    base = f"c{uuid.uuid4().hex[:10]}.example.com"
    validate_by_dns(admin, loopback_dns, base)  # a BR method: ssl_dv is public
    expect(admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 50_000, "card": SETTLING_CARD}), 201)
    loopback_dns.publish(base, "CAA", '0 issue "another-ca.example.net"')
    name = f"www.{base}"
    order = expect(admin.post("/api/orders/v1/orders", {
        "product": "ssl_dv", "term_years": 1, "server_type": "nginx", "common_name": name,
        "sans": [], "csr": p256_csr(name)}), 201)  # an admin's order is approved at once

    def settled():
        current = expect(admin.get(f"/api/orders/v1/orders/{order['id']}"), 200)
        return current if current["status"] in ("failed", "issued") else None

    final = wait_for(settled, timeout=60, message="the CAA decision")
    assert final["status"] == "failed"
    assert "CAA" in (final.get("failure_reason") or ""), final
    wait_for(lambda: expect(admin.get("/api/ledger/v1/balance"), 200) == {
        "available_cents": 50_000, "reserved_cents": 0, "currency": "USD"},
        message="the reservation released")


def test_an_operator_review_keeps_its_evidence_and_counts_for_private_products_only(stack):
    admin, operator = new_account(stack.base_url)
    base = f"r{uuid.uuid4().hex[:10]}.example.com"
    domain = expect(admin.post("/api/orders/v1/domains", {"name": base, "method": "dns-txt"}),
                    201)
    refused = operator.post(f"/api/orders/v1/domains/{domain['id']}/approve",
                            {"note": "checked by phone"})
    assert refused.status_code == 422 and "checked" in refused.json()["errors"]
    reviewed = expect(operator.post(f"/api/orders/v1/domains/{domain['id']}/approve", {
        "checked": "WHOIS registrant is the account's company", "reference": "T-4242"}), 200)
    assert reviewed["coverage"]["public"] is False
    [attempt] = expect(admin.get(f"/api/orders/v1/domains/{domain['id']}/attempts"),
                       200)["items"]
    assert (attempt["method"], attempt["reference"]) == ("manual", "T-4242")
    name = f"www.{base}"
    order = expect(admin.post("/api/orders/v1/orders", {
        "product": "ssl_dv", "term_years": 1, "server_type": "nginx", "common_name": name,
        "sans": [], "csr": p256_csr(name)}), 201)
    assert order["status"] == "pending_approval"  # an admin's order, not approved: public
    answer = admin.post(f"/api/orders/v1/orders/{order['id']}/approve", {})
    assert answer.status_code == 422
    assert answer.json()["code"] == "domain_not_validated"
    assert "does not count for the public product ssl_dv" in answer.json()["detail"]
