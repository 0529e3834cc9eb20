"""An order's life after issuance, through the gateway, in both run modes.

Each test opens its own customer account (the operator creates it), so the tests are
independent of each other and of the other end-to-end tests. Renewal notices and plan
reissues depend on the calendar; their tests (services/orders/tests) move the clock and
use a real SMTP server on loopback.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest
from chancery_shared.testing import wait_for

from tests.conftest import PASSWORD
from tests.e2e.scenario import (
    SETTLING_CARD,
    Api,
    expect,
    p256_csr,
    p256_csr_without_names,
    validate_by_dns,
)

pytestmark = pytest.mark.e2e
STRONG = "Marigold-Tunnel-Quartz-19"


@dataclass
class Account:
    admin: Api
    requester: Api
    requester_email: str
    colleague: Api
    colleague_id: str


def open_account(base_url: str, dns) -> Account:
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", PASSWORD)
    tag = uuid.uuid4().hex[:8]
    expect(operator.post("/api/identity/v1/accounts", {
        "name": f"Lifecycle {tag}", "admin_email": f"admin-{tag}@lifecycle.com",
        "admin_name": "Lifecycle Admin", "admin_password": STRONG}), 201)
    admin = anonymous.login(f"admin-{tag}@lifecycle.com", STRONG)
    validate_by_dns(admin, dns, "example.com")
    expect(admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 100_000, "card": SETTLING_CARD}), 201)
    people = {}
    for who in ("requester", "colleague"):
        email = f"{who}-{tag}@lifecycle.com"
        user = expect(admin.post("/api/identity/v1/users", {
            "email": email, "name": who.title(), "role": "limited", "unit_ids": [],
            "password": STRONG}), 201)
        people[who] = (anonymous.login(email, STRONG), user["id"], email)
    return Account(admin, people["requester"][0], people["requester"][2],
                   people["colleague"][0], people["colleague"][1])


def issued_order(account: Account, name: str) -> dict:
    order = expect(account.requester.post("/api/orders/v1/orders", {
        "product": "ssl_dv", "term_years": 1, "server_type": "iis", "common_name": name,
        "sans": [], "csr": p256_csr(name)}), 201)
    expect(account.admin.post(f"/api/orders/v1/orders/{order['id']}/approve", {}), 200)
    return wait_until(account, order["id"], lambda o: o["status"] == "issued")


def wait_until(account: Account, order_id: str, condition) -> dict:
    def probe():
        order = expect(account.admin.get(f"/api/orders/v1/orders/{order_id}"), 200)
        assert order["status"] != "failed", order
        return order if condition(order) else None

    return wait_for(probe, timeout=60, message=f"order {order_id}")


def test_assign_reissue_search_seal_and_revoke(stack, loopback_dns):
    account = open_account(stack.base_url, loopback_dns)
    order = issued_order(account, "shop.example.com")
    first_serial = order["certificate"]["serial"]
    path = f"/api/orders/v1/orders/{order['id']}"

    # a colleague sees nothing until assigned, then may download and reissue
    assert account.colleague.get(path).status_code == 404
    expect(account.admin._call("PUT", f"{path}/assignees",
                               json={"user_ids": [account.colleague_id]}), 200)
    download = account.colleague.get(f"{path}/certificate")  # iis: PKCS#7 by default
    assert download.status_code == 200
    assert download.headers["Content-Type"].startswith("application/pkcs7-mime")
    expect(account.colleague.post(f"{path}/reissue", {"csr": p256_csr_without_names()}), 200)
    reissued = wait_until(account, order["id"],
                          lambda o: o["certificate"]["serial"] != first_serial)
    assert reissued["status"] == "issued"
    superseded = wait_until(account, order["id"], lambda o: any(
        c["serial"] == first_serial and c["status"] == "revoked"
        for c in o.get("certificates", [])))
    assert superseded

    # the inventory finds it by a piece of its name; the CSV has it too
    found = expect(account.admin.get("/api/orders/v1/orders?name=shop.exam"), 200)["items"]
    assert [o["id"] for o in found] == [order["id"]]
    csv_text = account.admin.get("/api/orders/v1/orders.csv?name=shop").text
    assert order["id"] in csv_text and csv_text.splitlines()[0].startswith("id,")

    # the public seal shows the domain
    seal = Api(stack.base_url).get(f"{path}/seal.svg")
    assert seal.status_code == 200 and seal.headers["Content-Type"].startswith("image/svg")
    assert "shop.example.com" in "".join(ET.fromstring(seal.text).itertext())

    # revocation ends it, and the seal goes with it
    expect(account.requester.post(f"{path}/revoke", {"reason": "key_compromise"}), 200)
    wait_until(account, order["id"], lambda o: o["status"] == "revoked")
    assert Api(stack.base_url).get(f"{path}/seal.svg").status_code == 404


def test_refund_returns_the_price_and_renewal_prefills_a_new_order(stack, loopback_dns):
    account = open_account(stack.base_url, loopback_dns)
    funded = expect(account.admin.get("/api/ledger/v1/balance"), 200)["available_cents"]
    order = issued_order(account, "api.example.com")
    charged = wait_for(lambda: (lambda b: b if b["reserved_cents"] == 0 else None)(
        expect(account.admin.get("/api/ledger/v1/balance"), 200)), message="the capture")
    assert charged["available_cents"] == funded - order["price_cents"]

    renewal = expect(account.requester.post(f"/api/orders/v1/orders/{order['id']}/renew",
                                            {"csr": p256_csr("api.example.com")}), 201)
    assert renewal["id"] != order["id"]
    assert (renewal["common_name"], renewal["product"]) == ("api.example.com", "ssl_dv")
    assert renewal["status"] == "pending_approval"

    expect(account.admin.post(f"/api/orders/v1/orders/{order['id']}/refund",
                              {"reason": "cessation_of_operation"}), 200)
    wait_until(account, order["id"], lambda o: o["status"] == "revoked")
    wait_for(lambda: expect(account.admin.get("/api/ledger/v1/balance"),
                            200)["available_cents"] == funded, message="the refund")
