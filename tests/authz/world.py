"""A small world of accounts, units, people and objects, built through the public API.

Every principal of the authorization matrix exists here: a limited user, a finance
user, a unit administrator of the order's unit and one of another unit, an
administrator, the administrator of another account, the platform operator, and
nobody (anonymous). Objects are made fresh where an action would use them up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from chancery_shared.testing import wait_for

from tests.e2e.scenario import SETTLING_CARD, Api, expect, p256_csr, validate_by_dns

ACCOUNT_PASSWORD = "Tangerine-Harbour-Lantern-41"
PEOPLE_PASSWORD = "Violet-Compass-Meadow-73"
PRINCIPALS = ("anonymous", "limited", "finance", "unit_admin", "other_unit_admin", "admin",
              "other_admin", "operator")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class World:
    base_url: str
    apis: dict[str, Api] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # email, password
    issued_pool: list[str] = field(default_factory=list)
    fresh: dict[str, str] = field(default_factory=dict)  # the current row's fresh objects

    def api(self, principal: str) -> Api:
        return self.apis[principal]

    # --- fresh objects, made by whoever may make them --------------------------------

    def new_order(self, *, approve: bool = False) -> str:
        """A pending order of the limited user in unit 1 (optionally approved)."""
        name = f"{_unique('www')}.{self.ids['domain']}"
        order = expect(self.api("limited").post("/api/orders/v1/orders", {
            "product": "ssl_dv", "term_years": 1, "server_type": "nginx",
            "common_name": name, "sans": [], "csr": p256_csr(name),
            "unit_id": self.ids["unit"]}), 201)
        if approve:
            expect(self.api("admin").post(f"/api/orders/v1/orders/{order['id']}/approve", {}),
                   200)
        return order["id"]

    def new_issued_order(self) -> str:
        """An issued order of the limited user's; made ten at a time (issuance is async)."""
        if not self.issued_pool:
            batch = [self.new_order(approve=True) for _ in range(10)]

            def all_issued() -> bool:
                return all(expect(self.api("admin").get(f"/api/orders/v1/orders/{o}"),
                                  200)["status"] == "issued" for o in batch)

            wait_for(all_issued, timeout=90, message="a batch of issued orders")
            self.issued_pool.extend(batch)
        return self.issued_pool.pop()

    def new_domain(self) -> str:
        return expect(self.api("admin").post("/api/orders/v1/domains", {
            "name": f"{_unique('d')}.{self.ids['domain']}", "method": "dns-txt"}), 201)["id"]

    def new_organization(self) -> str:
        """A pending organization of the account (for OV and EV certificates)."""
        return expect(self.api("admin").post("/api/orders/v1/organizations", {
            "name": _unique("Org"), "country": "US", "state_or_province": "Oregon",
            "locality": "Portland"}), 201)["id"]

    def sign_in_again(self, principal: str) -> Api:
        """A second, separate session of ``principal`` (for logging out)."""
        email, password = self.credentials[principal]
        return Api(self.base_url).login(email, password)

    def new_refresh_token(self) -> str:
        email, password = self.credentials["admin"]
        return expect(Api(self.base_url).post("/api/identity/v1/sessions", {
            "email": email, "password": password}), 201)["refresh_token"]

    def new_admin_api_key(self) -> str:
        return expect(self.api("admin").post("/api/identity/v1/api-keys",
                                             {"name": _unique("key")}), 201)["id"]

    def new_person(self, role: str, units: tuple[str, ...]) -> str:
        """A fresh user of the admin's account (``units``: keys of ``ids``), by the admin."""
        return expect(self.api("admin").post("/api/identity/v1/users", {
            "email": f"{_unique(role)}@authz.com", "name": role.replace("_", " ").title(),
            "role": role, "unit_ids": [self.ids[u] for u in units],
            "password": PEOPLE_PASSWORD}), 201)["id"]

    def new_limited_user(self) -> str:
        """A limited user of unit 1 only."""
        return self.new_person("limited", ("unit",))

    def new_user_of_both_units(self) -> str:
        """A limited user of unit 1 and unit 2: no unit administrator of one unit manages
        them."""
        return self.new_person("limited", ("unit", "other_unit"))

    def new_finance_user_of_unit(self) -> str:
        """A finance user who is also in unit 1 (finance reaches the whole account)."""
        return self.new_person("finance", ("unit",))

    def new_purchase_order(self) -> str:
        return expect(self.api("admin").post("/api/ledger/v1/deposits", {
            "method": "purchase_order", "amount_cents": 500,
            "po_number": _unique("PO")}), 201)["id"]


def build_world(base_url: str, password: str, dns: Any) -> World:
    anonymous = Api(base_url)
    operator = anonymous.login("operator@chancery.local", password)
    world = World(base_url, {"anonymous": anonymous, "operator": operator})
    world.credentials["operator"] = ("operator@chancery.local", password)

    def open_account(name: str) -> tuple[Api, str]:
        email = f"{_unique('admin')}@{name.lower()}.com"
        expect(operator.post("/api/identity/v1/accounts", {
            "name": name, "admin_email": email, "admin_name": f"{name} Admin",
            "admin_password": ACCOUNT_PASSWORD}), 201)
        return anonymous.login(email, ACCOUNT_PASSWORD), email

    admin, admin_email = open_account("Authz")
    other_admin, other_email = open_account("Elsewhere")
    world.credentials.update(admin=(admin_email, ACCOUNT_PASSWORD),
                             other_admin=(other_email, ACCOUNT_PASSWORD))
    world.apis.update(admin=admin, other_admin=other_admin)
    unit = expect(admin.post("/api/identity/v1/units", {"name": _unique("Unit One")}), 201)
    other_unit = expect(admin.post("/api/identity/v1/units", {"name": _unique("Unit Two")}),
                        201)
    world.ids.update(unit=unit["id"], other_unit=other_unit["id"],
                     admin=expect(admin.get("/api/identity/v1/me"), 200)["id"],
                     other_admin=expect(other_admin.get("/api/identity/v1/me"), 200)["id"],
                     operator=expect(operator.get("/api/identity/v1/me"), 200)["id"])
    people = {"limited": ("limited", [unit["id"]]), "finance": ("finance", []),
              "unit_admin": ("unit_admin", [unit["id"]]),
              "other_unit_admin": ("unit_admin", [other_unit["id"]])}
    for principal, (role, units) in people.items():
        email = f"{_unique(principal)}@authz.com"
        user = expect(admin.post("/api/identity/v1/users", {
            "email": email, "name": principal.replace("_", " ").title(), "role": role,
            "unit_ids": units, "password": PEOPLE_PASSWORD}), 201)
        world.ids[principal] = user["id"]
        world.apis[principal] = anonymous.login(email, PEOPLE_PASSWORD)
        world.credentials[principal] = (email, PEOPLE_PASSWORD)

    # a domain validated by DNS change (example.com: a registered name the CA's linter
    # accepts; a BR method, since the world's orders are for a public product)
    world.ids["domain"] = "example.com"
    domain = validate_by_dns(admin, dns, "example.com")
    world.ids["domain_id"] = domain["id"]
    world.ids["organization_id"] = world.new_organization()

    # money, and one issued certificate of the limited user's in unit 1
    deposit = expect(admin.post("/api/ledger/v1/deposits", {
        "method": "card", "amount_cents": 1_000_000, "card": SETTLING_CARD}), 201)
    world.ids.update(deposit=deposit["id"], receipt=deposit["receipt_id"])
    world.ids["order"] = world.new_order()
    world.ids["issued_order"] = world.new_order(approve=True)
    wait_for(lambda: expect(admin.get(f"/api/orders/v1/orders/{world.ids['issued_order']}"),
                            200)["status"] == "issued", timeout=60, message="issuance")
    issuers = expect(admin.get("/api/ca/v1/issuers"), 200)["items"]
    world.ids["issuer"] = issuers[0]["id"]

    def order_entry() -> Any:
        items = expect(admin.get("/api/audit/v1/entries?action=orders.order.submitted"
                                 f"&target=order:{world.ids['order']}"), 200)["items"]
        return items[0]["id"] if items else None

    world.ids["audit_entry"] = wait_for(order_entry, message="the order's audit entry")
    return world
