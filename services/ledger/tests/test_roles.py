"""Who may do what: finance and admin own the money; the operator settles purchase orders."""

from __future__ import annotations

import shutil
import uuid

import pytest
from chancery_ledger.service import LedgerService
from chancery_shared.testing import TokenFactory, make_runtime

from .conftest import card_deposit

PO = {"method": "purchase_order", "amount_cents": 100, "po_number": "PO-9"}

# (method, path, body) -> {role: expected status}; None role = anonymous
ENDPOINTS = {
    ("GET", "/balance", None): {
        "admin": 200, "finance": 200, "limited": 403, "unit_admin": 403, "operator": 403,
        None: 401},
    ("GET", "/transactions", None): {
        "admin": 200, "finance": 200, "limited": 403, "unit_admin": 403, "operator": 403,
        None: 401},
    ("GET", "/receipts/{receipt}", None): {
        "admin": 200, "finance": 200, "limited": 403, "unit_admin": 403, "operator": 403,
        None: 401},
    ("POST", "/deposits", "card"): {
        "admin": 201, "finance": 201, "limited": 403, "unit_admin": 403, "operator": 403,
        None: 401},
    ("POST", "/deposits", "po"): {
        "admin": 201, "finance": 201, "limited": 403, "unit_admin": 403, "operator": 403,
        None: 401},
    ("GET", "/deposits", None): {
        "admin": 200, "finance": 200, "limited": 403, "unit_admin": 403, "operator": 200,
        None: 401},
    ("POST", "/deposits/{pending}/settle", None): {
        "operator": 200, "admin": 403, "finance": 403, "limited": 403, "unit_admin": 403,
        None: 401},
}
PERMISSIONS = {"/balance": "view_finance", "/transactions": "view_finance",
               "/receipts/{receipt}": "view_finance", "/deposits": "deposit_funds",
               "/deposits/{pending}/settle": "settle_deposits"}
CASES = [(method, path, body, role, status)
         for (method, path, body), expected in ENDPOINTS.items()
         for role, status in expected.items()]


@pytest.fixture(scope="module")
def world(tmp_path_factory, migrated_database):
    """One ledger and one account for the whole table (the cases only read or add)."""
    var = tmp_path_factory.mktemp("roles")
    shutil.copyfile(migrated_database, var / "ledger.db")
    tokens = TokenFactory()
    service = LedgerService(make_runtime(var, tokens))
    client = service.create_app().test_client()
    account_id = str(uuid.uuid4())
    owner = tokens.headers(role="admin", account_id=account_id)
    receipt = client.post("/api/ledger/v1/deposits", json=card_deposit(100),
                          headers=owner).json["receipt_id"]
    yield client, tokens, account_id, owner, receipt
    service.dispose()


@pytest.mark.parametrize("method, path, body, role, status", CASES)
def test_role_table(world, method, path, body, role, status):
    client, tokens, account_id, owner, receipt = world
    pending = client.post("/api/ledger/v1/deposits", json=PO, headers=owner).json["id"]
    if role is None:
        headers = {}
    else:
        # account users act in the owner's account; the operator has no account
        headers = tokens.headers(role=role,
                                 account_id=None if role == "operator" else account_id)
    url = "/api/ledger/v1" + path.format(receipt=receipt, pending=pending)
    payload = {"card": card_deposit(100), "po": PO}.get(body)
    response = client.open(url, method=method, json=payload, headers=headers)
    assert response.status_code == status, response.json
    if status == 403:
        expected = PERMISSIONS[path]
        if method == "GET" and path == "/deposits":
            expected = "read_deposits"
        assert response.json["missing_permission"] == expected
        assert expected in response.json["detail"]
    if status == 401:
        assert response.mimetype == "application/problem+json"
