"""Lockout through the gateway, and the audit log showing the failures with addresses."""

from __future__ import annotations

import uuid

import pytest
import requests
from chancery_shared.testing import wait_for

from tests.conftest import PASSWORD
from tests.e2e.scenario import Api, expect

pytestmark = pytest.mark.e2e
ATTACKER = "198.51.100.77"


def sign_in(base_url: str, email: str, password: str) -> requests.Response:
    return requests.post(f"{base_url}/api/identity/v1/sessions",
                         json={"email": email, "password": password},
                         headers={"X-Forwarded-For": ATTACKER}, timeout=30)


def test_repeated_failures_lock_the_user_and_are_audited_with_the_address(stack):
    admin = Api(stack.base_url).login("admin@example.com", PASSWORD)
    email = f"target-{uuid.uuid4().hex[:8]}@example.com"
    user = expect(admin.post("/api/identity/v1/users", {
        "email": email, "name": "Target User", "role": "limited", "unit_ids": [],
        "password": "Saffron-Kettle-Drum-58"}), 201)
    for _ in range(5):
        assert sign_in(stack.base_url, email, "Wrong-Guess-Pass-00").status_code == 401
    locked = sign_in(stack.base_url, email, "Saffron-Kettle-Drum-58")
    assert locked.status_code == 401  # the right password does not open a locked account
    assert expect(admin.get(f"/api/identity/v1/users/{user['id']}"), 200)["locked_until"]

    expect(admin.post(f"/api/identity/v1/users/{user['id']}/unlock", {}), 200)
    assert sign_in(stack.base_url, email, "Saffron-Kettle-Drum-58").status_code == 201

    def failures():
        items = expect(admin.get(f"/api/audit/v1/entries?action=identity.login.failed"
                                 f"&target=user:{user['id']}&limit=50"), 200)["items"]
        return items if len(items) >= 6 else None

    entries = wait_for(failures, message="six audited failures")
    assert {e["ip"] for e in entries} == {ATTACKER}
    assert any("locked" in e["description"].lower() for e in entries), entries
