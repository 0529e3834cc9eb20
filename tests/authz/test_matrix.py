"""The authorization matrix: every endpoint of every service × every kind of caller.

Each row names an endpoint and the status each principal must get; ``design/roles.md``
is the source. A new endpoint without a row fails ``test_every_endpoint_has_a_row``.
Rows whose action uses its object up (approve, settle…) get a fresh object per call.
The matrix runs against both the embedded and the distributed stack.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from chancery_shared.service import service_classes
from chancery_shared.testing import make_runtime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from tests.authz.world import ACCOUNT_PASSWORD, PEOPLE_PASSWORD, PRINCIPALS, World
from tests.e2e.scenario import SETTLING_CARD, p256_csr, p256_csr_without_names

pytestmark = pytest.mark.e2e

ANON, LTD, FIN, UA, OUA, ADM, OADM, OPR = PRINCIPALS


def statuses(default: int, **overrides: int) -> dict[str, int]:
    """``default`` for every signed-in principal, 401 for anonymous, then the overrides."""
    table = {p: default for p in PRINCIPALS}
    table[ANON] = 401
    table.update({k: v for k, v in overrides.items()})
    return table


def everyone(status: int) -> dict[str, int]:
    return {p: status for p in PRINCIPALS}


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # with {placeholders} filled from world.ids or a fresh-object maker
    expected: dict[str, int]
    body: Callable[[World, str], Any] | None = None
    fresh: dict[str, Callable[[World], str]] = field(default_factory=dict)
    own_session: bool = False  # act in a separate, fresh session (the action ends it)
    on_success: Callable[[World, str, Any], None] | None = None
    label: str = ""  # tells apart rows of one endpoint (another body, another target)

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}" + (f" ({self.label})" if self.label else "")


def _email(world: World, principal: str) -> str:
    return f"new-{uuid.uuid4().hex[:8]}@authz.com"


def _ocsp_get_request(world: World) -> str:
    """The world's issued certificate asked about over RFC 5019 GET (URL-safe base64)."""
    if "ocsp_get_request" not in world.ids:
        response = world.api(ADM).get(f"/api/orders/v1/orders/{world.ids['issued_order']}"
                                      "/certificate?format=pem-chain")
        assert response.status_code == 200, response.text
        leaf, issuer = x509.load_pem_x509_certificates(response.content)[:2]
        der = (ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
               .public_bytes(serialization.Encoding.DER))
        world.ids["ocsp_get_request"] = base64.urlsafe_b64encode(der).decode().rstrip("=")
    return world.ids["ocsp_get_request"]


def _new_user(role: str, units: tuple[str, ...]) -> Callable[[World, str], Any]:
    return lambda w, p: {"email": _email(w, p), "name": "New Person", "role": role,
                         "unit_ids": [w.ids[u] for u in units], "password": PEOPLE_PASSWORD}


# design/roles.md: a unit administrator manages only limited users and unit administrators
# whose units are all within the caller's, never finance or admin users; nobody changes
# their own role or units. The targets are made fresh for each call.
UNIT_BOUND = dict(limited=403, finance=403, other_unit_admin=404, other_admin=404,
                  operator=403)
NOT_FOR_UNIT_ADMINS = dict(UNIT_BOUND, unit_admin=403)
BOTH_UNITS = dict(limited=403, finance=403, unit_admin=403, other_unit_admin=403,
                  other_admin=404, operator=403)
PEOPLE_ROWS: list[Row] = [
    Row("POST", "/api/identity/v1/users",
        statuses(201, limited=403, finance=403, unit_admin=403, other_unit_admin=403,
                 other_admin=422, operator=403),
        body=_new_user("finance", ("unit",)), label="a finance user of unit 1"),
    Row("POST", "/api/identity/v1/users",
        statuses(201, limited=403, finance=403, other_unit_admin=403, other_admin=422,
                 operator=403),
        body=_new_user("unit_admin", ("unit",)), label="a unit admin of unit 1"),
    Row("POST", "/api/identity/v1/users",
        statuses(201, limited=403, finance=403, unit_admin=403, other_unit_admin=403,
                 other_admin=422, operator=403),
        body=_new_user("limited", ("unit", "other_unit")), label="a user of both units"),
    Row("POST", "/api/identity/v1/users",
        statuses(201, limited=403, finance=403, unit_admin=403, other_unit_admin=403,
                 operator=403),
        body=_new_user("limited", ()), label="a user of no unit"),
    Row("PATCH", "/api/identity/v1/users/{fresh_user}", statuses(200, **NOT_FOR_UNIT_ADMINS),
        body=lambda w, p: {"role": "finance"}, fresh={"fresh_user": World.new_limited_user},
        label="make finance"),
    Row("PATCH", "/api/identity/v1/users/{fresh_user}", statuses(200, **UNIT_BOUND),
        body=lambda w, p: {"role": "unit_admin"},
        fresh={"fresh_user": World.new_limited_user}, label="make unit admin"),
    Row("PATCH", "/api/identity/v1/users/{fresh_user}", statuses(200, **NOT_FOR_UNIT_ADMINS),
        body=lambda w, p: {"unit_ids": [w.ids["unit"], w.ids["other_unit"]]},
        fresh={"fresh_user": World.new_limited_user}, label="add unit 2"),
    Row("PATCH", "/api/identity/v1/users/{fresh_user}", statuses(200, **NOT_FOR_UNIT_ADMINS),
        body=lambda w, p: {"unit_ids": []}, fresh={"fresh_user": World.new_limited_user},
        label="leave with no unit"),
    Row("PATCH", "/api/identity/v1/users/{fresh_finance}",
        statuses(200, **NOT_FOR_UNIT_ADMINS), body=lambda w, p: {"name": "Renamed Finance"},
        fresh={"fresh_finance": World.new_finance_user_of_unit}, label="rename finance"),
    Row("PATCH", "/api/identity/v1/users/{fresh_both}", statuses(200, **BOTH_UNITS),
        body=lambda w, p: {"role": "unit_admin"},
        fresh={"fresh_both": World.new_user_of_both_units}, label="make unit admin of both"),
    Row("PATCH", "/api/identity/v1/users/{fresh_both}", statuses(200, **BOTH_UNITS),
        body=lambda w, p: {"active": False},
        fresh={"fresh_both": World.new_user_of_both_units}, label="deactivate"),
    Row("PATCH", "/api/identity/v1/users/{fresh_both}", statuses(200, **BOTH_UNITS),
        body=lambda w, p: {"name": "Renamed Both"},
        fresh={"fresh_both": World.new_user_of_both_units}, label="rename"),
    Row("POST", "/api/identity/v1/users/{fresh_both}/unlock", statuses(200, **BOTH_UNITS),
        body=lambda w, p: {}, fresh={"fresh_both": World.new_user_of_both_units},
        label="a user of both units"),
    # one's own record ({self}: the caller): no change of one's own role
    Row("PATCH", "/api/identity/v1/users/{self}", statuses(403),
        body=lambda w, p: {"role": "limited" if p in (ADM, OADM) else "admin"},
        label="one's own role"),
    Row("PATCH", "/api/identity/v1/users/{self}",
        statuses(403, other_admin=422),
        body=lambda w, p: {"unit_ids": [w.ids["unit"], w.ids["other_unit"]]},
        label="one's own units"),
]


def _funded_unit(world: World) -> str:
    """A unit id (unknown to identity: the ledger trusts the id) holding 2 cents of the
    admin's account."""
    unit_id = str(uuid.uuid4())
    response = world.api(ADM).post(f"/api/ledger/v1/units/{unit_id}/funds",
                                   {"amount_cents": 2})
    assert response.status_code == 201, response.text
    return unit_id


R = Row
ROWS: list[Row] = [
    # --- identity ----------------------------------------------------------------------
    R("POST", "/api/identity/v1/sessions", everyone(401),
      body=lambda w, p: {"email": "nobody@authz.com", "password": "wrong-password-123"}),
    R("GET", "/api/identity/v1/me", statuses(200)),
    R("GET", "/api/identity/v1/users", statuses(200, limited=403, finance=403, operator=403)),
    R("POST", "/api/identity/v1/users",
      statuses(201, limited=403, finance=403, other_unit_admin=403, other_admin=422,
               operator=403),
      body=lambda w, p: {"email": _email(w, p), "name": "New Person", "role": "limited",
                         "unit_ids": [w.ids["unit"]], "password": PEOPLE_PASSWORD}),
    R("GET", "/api/identity/v1/users/{limited}",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403)),
    R("GET", "/api/identity/v1/units", statuses(200, limited=403, finance=403, operator=403)),
    R("POST", "/api/identity/v1/units",
      statuses(201, limited=403, finance=403, unit_admin=403, other_unit_admin=403,
               operator=403),
      body=lambda w, p: {"name": f"Unit {uuid.uuid4().hex[:8]}"}),
    R("POST", "/api/identity/v1/accounts", statuses(403, operator=201),
      body=lambda w, p: {"name": "Fresh Co", "admin_email": _email(w, p),
                         "admin_name": "Fresh Admin", "admin_password": ACCOUNT_PASSWORD}),
    R("GET", "/api/identity/.well-known/jwks.json", everyone(200)),
    R("POST", "/api/identity/v1/sessions/refresh", everyone(200),
      body=lambda w, p: {"refresh_token": w.fresh["fresh_refresh"]},
      fresh={"fresh_refresh": World.new_refresh_token}),
    R("DELETE", "/api/identity/v1/sessions/current", statuses(204), own_session=True),
    R("POST", "/api/identity/v1/me/password", statuses(204),
      body=lambda w, p: {"current_password": w.credentials.get(p, ("", "x"))[1],
                         "new_password": f"Granite-Orchard-{uuid.uuid4().hex[:8]}"},
      on_success=lambda w, p, body: w.api(p)._call("POST", "/api/identity/v1/me/password", json={
          "current_password": body["new_password"],
          "new_password": body["current_password"]}).raise_for_status()),  # shared users
    R("PATCH", "/api/identity/v1/users/{limited}",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403),
      body=lambda w, p: {"name": "Limited User"}),
    R("POST", "/api/identity/v1/users/{limited}/unlock",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403), body=lambda w, p: {}),
    R("GET", "/api/identity/v1/units/{unit}",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403)),
    R("PATCH", "/api/identity/v1/units/{unit}",
      statuses(403, admin=200, other_admin=404),
      body=lambda w, p: {"name": f"Unit One {uuid.uuid4().hex[:6]}"}),
    R("POST", "/api/identity/v1/api-keys", statuses(201), body=lambda w, p: {"name": "ci"}),
    R("GET", "/api/identity/v1/api-keys", statuses(200)),
    R("DELETE", "/api/identity/v1/api-keys/{fresh_key}", statuses(404, admin=204),
      fresh={"fresh_key": World.new_admin_api_key}),
    # --- orders ------------------------------------------------------------------------
    R("GET", "/api/orders/v1/products", statuses(200)),
    R("POST", "/api/orders/v1/domains", statuses(201, limited=403, finance=403, operator=403),
      body=lambda w, p: {"name": f"d{uuid.uuid4().hex[:8]}.example.com", "method": "dns-txt"}),
    R("GET", "/api/orders/v1/domains", statuses(200, limited=403, finance=403)),
    R("POST", "/api/orders/v1/domains/{fresh_domain}/check",
      statuses(200, limited=403, finance=403, other_admin=404, operator=403),
      body=lambda w, p: {}, fresh={"fresh_domain": World.new_domain}),
    R("GET", "/api/orders/v1/domains/{domain_id}/attempts",
      statuses(200, limited=403, finance=403, other_admin=404)),
    R("GET", "/api/orders/v1/domains/{domain_id}",
      statuses(200, limited=403, finance=403, other_admin=404)),
    R("POST", "/api/orders/v1/domains/{fresh_domain}/approve", statuses(403, operator=200),
      body=lambda w, p: {"checked": "matrix review", "reference": "T-matrix"},
      fresh={"fresh_domain": World.new_domain}),
    R("POST", "/api/orders/v1/organizations",
      statuses(201, limited=403, finance=403, operator=403),
      body=lambda w, p: {"name": f"Org {uuid.uuid4().hex[:8]}", "country": "US",
                         "state_or_province": "Oregon", "locality": "Portland"}),
    R("GET", "/api/orders/v1/organizations", statuses(200, limited=403, finance=403)),
    R("GET", "/api/orders/v1/organizations/{organization_id}",
      statuses(200, limited=403, finance=403, other_admin=404)),
    R("GET", "/api/orders/v1/organizations/{organization_id}/attempts",
      statuses(200, limited=403, finance=403, other_admin=404)),
    R("POST", "/api/orders/v1/organizations/{fresh_organization}/approve",
      statuses(403, operator=200),
      body=lambda w, p: {"source": "government_agency", "checked": "matrix registry lookup",
                         "reference": "T-matrix"},
      fresh={"fresh_organization": World.new_organization}),
    R("POST", "/api/orders/v1/orders", statuses(201, operator=403),
      body=lambda w, p: {"product": "ssl_dv", "term_years": 1, "server_type": "nginx",
                         "common_name": "www.example.com", "sans": [],
                         "csr": p256_csr("www.example.com")}),
    R("GET", "/api/orders/v1/orders", statuses(200, operator=403)),
    R("GET", "/api/orders/v1/orders/{order}",
      statuses(200, other_unit_admin=404, other_admin=404, operator=403)),
    R("POST", "/api/orders/v1/orders/{fresh_order}/approve",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403),
      body=lambda w, p: {}, fresh={"fresh_order": World.new_order}),
    R("POST", "/api/orders/v1/orders/{fresh_order}/reject",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403),
      body=lambda w, p: {"reason": "matrix"}, fresh={"fresh_order": World.new_order}),
    R("POST", "/api/orders/v1/orders/{fresh_order}/cancel",
      statuses(200, finance=403, other_unit_admin=404, other_admin=404, operator=403),
      body=lambda w, p: {"reason": "matrix"}, fresh={"fresh_order": World.new_order}),
    R("PATCH", "/api/orders/v1/orders/{fresh_order}",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403),
      body=lambda w, p: {"notes": "edited by the matrix"},
      fresh={"fresh_order": World.new_order}),
    R("POST", "/api/orders/v1/orders/{fresh_issued}/reissue",
      statuses(200, finance=403, other_unit_admin=404, other_admin=404, operator=403),
      body=lambda w, p: {"csr": p256_csr_without_names()},
      fresh={"fresh_issued": World.new_issued_order}),
    R("POST", "/api/orders/v1/orders/{fresh_issued}/revoke",
      statuses(200, finance=403, other_unit_admin=404, other_admin=404, operator=403),
      body=lambda w, p: {"reason": "superseded"},
      fresh={"fresh_issued": World.new_issued_order}),
    R("POST", "/api/orders/v1/orders/{fresh_issued}/refund",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403),
      body=lambda w, p: {"reason": "cessation_of_operation"},
      fresh={"fresh_issued": World.new_issued_order}),
    R("POST", "/api/orders/v1/orders/{fresh_issued}/renew",
      statuses(201, finance=403, other_unit_admin=404, other_admin=404, operator=403),
      body=lambda w, p: {"csr": p256_csr_without_names()},
      fresh={"fresh_issued": World.new_issued_order}),
    R("PUT", "/api/orders/v1/orders/{fresh_order}/assignees",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404,
               operator=403),
      body=lambda w, p: {"user_ids": [w.ids["finance"]]},
      fresh={"fresh_order": World.new_order}),
    R("GET", "/api/orders/v1/orders.csv", statuses(200, operator=403)),
    R("GET", "/api/orders/v1/orders/{issued_order}/seal.svg", everyone(200)),
    R("GET", "/api/orders/v1/renewal-notices", statuses(403, admin=200, other_admin=200)),
    R("PUT", "/api/orders/v1/renewal-notices", statuses(403, admin=200, other_admin=200),
      body=lambda w, p: {"days_before": [60, 30, 7], "emails": ["pki@example.com"]}),
    R("GET", "/api/orders/v1/orders/{issued_order}/renewal-notices",
      statuses(403, unit_admin=200, other_unit_admin=404, admin=200, other_admin=404)),
    R("PUT", "/api/orders/v1/orders/{issued_order}/renewal-notices",
      statuses(403, unit_admin=200, other_unit_admin=404, admin=200, other_admin=404),
      body=lambda w, p: {"days_before": [30, 7], "emails": []}),
    R("GET", "/api/orders/v1/orders/{issued_order}/certificate",
      statuses(200, finance=403, other_unit_admin=404, other_admin=404, operator=403)),
    # --- ca-signer ---------------------------------------------------------------------
    R("GET", "/api/ca/v1/issuers", statuses(200)),
    R("GET", "/ca/issuers/{issuer}.crt", everyone(200)),
    R("GET", "/ca/crl/{issuer}.crl", everyone(200)),
    # a JSON body is no OCSP request: answered malformedRequest, HTTP 200 (RFC 6960 A.1)
    R("POST", "/ca/ocsp", everyone(200), body=lambda w, p: {"not": "an OCSP request"}),
    R("GET", "/ca/ocsp/{ocsp_request}", everyone(200),
      fresh={"ocsp_request": _ocsp_get_request}),
    # anyone may report a problem (BR 4.9.3); only the operator reads the reports
    R("POST", "/ca/problem-reports", everyone(201),
      body=lambda w, p: {"kind": "misuse", "message": f"matrix test from {p}"}),
    R("GET", "/api/ca/v1/problem-reports", statuses(403, operator=200)),
    # --- ledger --------------------------------------------------------------------------
    R("GET", "/api/ledger/v1/balance",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, operator=403)),
    R("POST", "/api/ledger/v1/deposits",
      statuses(201, limited=403, unit_admin=403, other_unit_admin=403, operator=403),
      body=lambda w, p: {"method": "card", "amount_cents": 100, "card": SETTLING_CARD}),
    R("GET", "/api/ledger/v1/deposits",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403)),
    R("GET", "/api/ledger/v1/deposits/{deposit}",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, other_admin=404)),
    R("POST", "/api/ledger/v1/deposits/{fresh_po}/settle", statuses(403, operator=200),
      body=lambda w, p: {}, fresh={"fresh_po": World.new_purchase_order}),
    R("GET", "/api/ledger/v1/transactions",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, operator=403)),
    R("GET", "/api/ledger/v1/receipts/{receipt}",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, other_admin=404,
               operator=403)),
    R("GET", "/api/ledger/v1/invoices/{fresh_po}",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, other_admin=404,
               operator=403), fresh={"fresh_po": World.new_purchase_order}),
    R("GET", "/api/ledger/v1/reports/spend",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, operator=403)),
    R("GET", "/api/ledger/v1/reports/transactions",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, operator=403)),
    # division funds: other_admin's account never has $10.00 nor this unit's money (409)
    R("POST", "/api/ledger/v1/units/{unit}/funds",
      statuses(201, limited=403, unit_admin=403, other_unit_admin=403, other_admin=409,
               operator=403), body=lambda w, p: {"amount_cents": 1_000}),
    R("POST", "/api/ledger/v1/units/{funded_unit}/funds/return",
      statuses(201, limited=403, unit_admin=403, other_unit_admin=403, other_admin=409,
               operator=403), body=lambda w, p: {"amount_cents": 1},
      fresh={"funded_unit": _funded_unit}),
    # a unit administrator reads their own units' funds (another unit's: 404)
    R("GET", "/api/ledger/v1/units/{unit}/funds",
      statuses(200, limited=403, other_unit_admin=404, operator=403)),
    R("GET", "/api/ledger/v1/units/{other_unit}/funds",
      statuses(200, limited=403, unit_admin=404, operator=403)),
    R("GET", "/api/ledger/v1/units/funds", statuses(200, limited=403, operator=403)),
    R("GET", "/api/ledger/v1/settings/low-balance",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, operator=403)),
    R("PUT", "/api/ledger/v1/settings/low-balance",
      statuses(200, limited=403, unit_admin=403, other_unit_admin=403, operator=403),
      body=lambda w, p: {"threshold_cents": 0, "enabled": False}),
    # --- audit ---------------------------------------------------------------------------
    R("GET", "/api/audit/v1/entries", statuses(200, limited=403, finance=403)),
    R("GET", "/api/audit/v1/entries.csv", statuses(200, limited=403, finance=403)),
    R("GET", "/api/audit/v1/entries/{audit_entry}",
      statuses(200, limited=403, finance=403, other_unit_admin=404, other_admin=404)),
    # an admin verifies their own account's log; another account's is never reachable
    R("GET", "/api/audit/v1/verify",
      statuses(200, limited=403, finance=403, unit_admin=403, other_unit_admin=403)),
]
ROWS += PEOPLE_ROWS
for _service in ("identity", "orders", "ca", "ledger", "audit"):
    for _leaf in ("healthz", "readyz", "metrics", "openapi.json"):
        ROWS.append(R("GET", f"/api/{_service}/{_leaf}", everyone(200)))
# the API browser (served by identity): a public page over the public documents
ROWS += [
    R("GET", "/api/docs", everyone(200)),  # a redirect to /api/docs/, followed
    R("GET", "/api/docs/", everyone(200)),
    R("GET", "/api/docs/config.js", everyone(200)),
    R("GET", "/api/docs/assets/{asset}", everyone(200),
      fresh={"asset": lambda w: "swagger-ui.css"}),
]

CASES = [(row, principal) for row in ROWS for principal in PRINCIPALS]


def test_every_endpoint_has_a_row(tmp_path):
    """A new endpoint must be added to the matrix: this fails until it is."""
    runtime = make_runtime(tmp_path)
    routes = set()
    for cls in service_classes().values():
        service = cls(runtime)
        for rule in service.create_app().url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", "{}", rule.rule)
            routes |= {f"{method} {path}" for method in rule.methods - {"HEAD", "OPTIONS"}}
        service.dispose()
    covered = {f"{row.method} {re.sub(r'{[a-z_]+}', '{}', row.path)}" for row in ROWS}
    assert not routes - covered, f"endpoints missing from the matrix: {sorted(routes - covered)}"
    assert not covered - routes, f"matrix rows for endpoints that do not exist: " \
                                 f"{sorted(covered - routes)}"


@pytest.mark.parametrize("row, principal", CASES,
                         ids=[f"{row.key}-{principal}" for row, principal in CASES])
def test_matrix(world, row, principal):
    values = {**world.ids, "self": world.ids.get(principal, "nobody")}
    for name, make in row.fresh.items():
        values[name] = make(world)
    world.fresh = values
    path = row.path.format(**values)
    api = world.sign_in_again(principal) if row.own_session and principal != ANON \
        else world.api(principal)
    body = row.body(world, principal) if row.body else None
    response = api._call(row.method, path, json=body) if body is not None \
        else api._call(row.method, path)
    expected = row.expected[principal]
    assert response.status_code == expected, (
        f"{principal} {row.method} {path}: expected {expected}, got {response.status_code} "
        f"{response.text[:300]}")
    if expected < 400 and row.on_success:
        row.on_success(world, principal, body)
    if expected >= 400:
        assert response.headers["Content-Type"].startswith("application/problem+json")
    if expected == 403 and row.path.startswith("/api/") and "/v1/" in row.path:
        assert response.json().get("missing_permission"), response.text
