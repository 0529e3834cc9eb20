"""What each kind of caller sees in the list endpoints (the matrix checks statuses)."""

from __future__ import annotations

import pytest

from tests.authz.world import World
from tests.e2e.scenario import expect, p256_csr

pytestmark = pytest.mark.e2e


def ids(world: World, principal: str, path: str) -> set[str]:
    return {item["id"] for item in expect(world.api(principal).get(path), 200)["items"]}


def test_orders_by_role(world):
    order = world.ids["order"]  # the limited user's, in unit 1
    seen = {p: order in ids(world, p, "/api/orders/v1/orders?limit=500")
            for p in ("limited", "finance", "unit_admin", "other_unit_admin", "admin",
                      "other_admin")}
    assert seen == {"limited": True, "finance": True, "unit_admin": True,
                    "other_unit_admin": False, "admin": True, "other_admin": False}


def test_limited_sees_only_their_own_orders(world):
    mine = ids(world, "limited", "/api/orders/v1/orders?limit=500")
    admins_own = expect(world.api("admin").post("/api/orders/v1/orders", {
        "product": "ssl_dv", "term_years": 1, "server_type": "nginx",
        "common_name": "admin.example.com", "sans": [],
        "csr": p256_csr("admin.example.com")}), 201)["id"]
    assert admins_own not in ids(world, "limited", "/api/orders/v1/orders?limit=500")
    assert world.ids["order"] in mine


def test_users_by_role(world):
    limited = world.ids["limited"]
    assert limited in ids(world, "admin", "/api/identity/v1/users?limit=500")
    assert limited in ids(world, "unit_admin", "/api/identity/v1/users?limit=500")
    assert limited not in ids(world, "other_unit_admin", "/api/identity/v1/users?limit=500")
    assert limited not in ids(world, "other_admin", "/api/identity/v1/users?limit=500")


def test_units_by_role(world):
    assert ids(world, "unit_admin", "/api/identity/v1/units") == {world.ids["unit"]}
    assert ids(world, "other_unit_admin", "/api/identity/v1/units") == {world.ids["other_unit"]}
    assert {world.ids["unit"], world.ids["other_unit"]} <= ids(world, "admin",
                                                                "/api/identity/v1/units")
    assert not {world.ids["unit"], world.ids["other_unit"]} & ids(world, "other_admin",
                                                                  "/api/identity/v1/units")


def test_domains_and_deposits_stay_in_their_account(world):
    assert world.ids["domain_id"] in ids(world, "admin", "/api/orders/v1/domains")
    assert world.ids["domain_id"] not in ids(world, "other_admin", "/api/orders/v1/domains")
    assert world.ids["domain_id"] in ids(world, "operator", "/api/orders/v1/domains?limit=500")
    assert world.ids["deposit"] in ids(world, "finance", "/api/ledger/v1/deposits")
    assert world.ids["deposit"] not in ids(world, "other_admin", "/api/ledger/v1/deposits")


def test_audit_entries_by_role(world):
    entry = world.ids["audit_entry"]  # the limited user's order in unit 1
    path = "/api/audit/v1/entries?limit=500&action=orders.order.submitted"
    assert entry in ids(world, "admin", path)
    assert entry in ids(world, "unit_admin", path)
    assert entry not in ids(world, "other_unit_admin", path)
    assert entry not in ids(world, "other_admin", path)
    assert entry in ids(world, "operator", path)
