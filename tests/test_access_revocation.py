"""Revoked access is refused by the other services as soon as identity's event arrives.

identity, orders and audit on SQLite and one in-memory bus of their own (no servers):
identity's relay publishes what it wrote, and orders and audit each hear it through the
revocation listener their hosts run (one per process), without waiting for the tokens
to expire (issue #17: a deactivated user's token still placed an order, a demoted unit
admin's token still read the audit log, a signed-out session still worked elsewhere).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chancery_audit.service import AuditService
from chancery_identity.service import IdentityService
from chancery_identity.testing import (
    API,
    TEST_PASSWORD,
    bearer,
    build_test_service,
    jwks_of,
    sign_in,
)
from chancery_orders.service import OrdersService
from chancery_shared.messaging.envelope import utcnow
from chancery_shared.service import Service
from chancery_shared.testing import make_runtime, purge_broker, wait_for

ORDERS = "/api/orders/v1/orders"
AUDIT = "/api/audit/v1/entries"


@dataclass
class Stack:
    identity: IdentityService
    clients: dict[str, Any]

    def admin(self) -> dict[str, str]:
        return bearer(sign_in(self.clients["identity"], "admin@example.com").json["access_token"])

    def new_user(self, role: str, unit_ids: tuple[str, ...] = ()) -> dict[str, Any]:
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        r = self.clients["identity"].post(f"{API}/users", headers=self.admin(), json={
            "email": email, "name": f"Test {role}", "role": role,
            "unit_ids": list(unit_ids), "password": TEST_PASSWORD})
        assert r.status_code == 201, r.json
        return r.json

    def token(self, email: str) -> dict[str, str]:
        r = sign_in(self.clients["identity"], email)
        assert r.status_code == 201, r.json
        return bearer(r.json["access_token"])

    def patch_user(self, user_id: str, changes: dict[str, Any]) -> None:
        r = self.clients["identity"].patch(f"{API}/users/{user_id}", headers=self.admin(),
                                           json=changes)
        assert r.status_code == 200, r.json


def refused(client: Any, path: str, headers: dict[str, str]) -> Any:
    """The answer once the token is refused as revoked (None while it is still taken)."""
    r = client.get(path, headers=headers)
    return r if r.status_code == 401 else None


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    broker_url = f"memory://revocation-{uuid.uuid4().hex}"
    purge_broker(broker_url)
    identity = build_test_service(tmp_path, CHANCERY_BROKER_URL=broker_url)
    identity.clock = utcnow  # real time: the other services compare it with the bus's
    others: list[Service] = []
    for cls in (OrdersService, AuditService):
        service = cls(make_runtime(tmp_path, CHANCERY_BROKER_URL=broker_url))
        service.runtime.jwks_fetcher = lambda: jwks_of(identity)
        service.migrate()
        others.append(service)
    stop = threading.Event()
    threading.Thread(target=identity.relay().run, args=(stop,), daemon=True).start()
    listeners = [service.revocation_listener() for service in (identity, *others)]
    for listener in listeners:
        listener.start(stop)
    for listener in listeners:
        assert listener.ready.wait(10)
    services = {"identity": identity, "orders": others[0], "audit": others[1]}
    try:
        yield Stack(identity, {name: svc.create_app().test_client()
                               for name, svc in services.items()})
    finally:
        stop.set()
        for service in services.values():
            service.dispose()


def test_a_deactivated_users_token_cannot_place_an_order(stack):
    user = stack.new_user("limited")
    headers = stack.token(user["email"])
    identity = stack.clients["identity"]
    key = identity.post(f"{API}/api-keys", headers=headers, json={"name": "ci"}).json["key"]
    r = identity.post(f"{API}/sessions", json={"api_key": key})
    assert r.status_code == 201, r.json
    machine = bearer(r.json["access_token"])  # no sign-in session: only the user rule holds
    orders = stack.clients["orders"]
    assert orders.get(ORDERS, headers=headers).status_code == 200
    assert orders.get(ORDERS, headers=machine).status_code == 200
    stack.patch_user(user["id"], {"active": False})
    for token in (headers, machine):
        answer = wait_for(lambda token=token: refused(orders, ORDERS, token), timeout=10,
                          message="orders refusing the deactivated user's token")
        assert answer.json["code"] == "token_revoked"
        assert "deactivated" in answer.json["detail"]
        assert answer.mimetype == "application/problem+json"
        r = orders.post(ORDERS, headers=token, json={})
        assert (r.status_code, r.json["code"]) == (401, "token_revoked")


def test_a_demoted_unit_admins_token_cannot_read_the_audit_log(stack):
    r = stack.clients["identity"].post(f"{API}/units", headers=stack.admin(),
                                       json={"name": f"Unit {uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.json
    lead = stack.new_user("unit_admin", (r.json["id"],))
    headers = stack.token(lead["email"])
    audit = stack.clients["audit"]
    assert audit.get(AUDIT, headers=headers).status_code == 200
    stack.patch_user(lead["id"], {"role": "limited"})
    answer = wait_for(lambda: refused(audit, AUDIT, headers), timeout=10,
                      message="audit refusing the demoted unit admin's token")
    assert answer.json["code"] == "token_revoked"
    # signed in again, they carry their new role: taken, and it may not read the log
    fresh = stack.token(lead["email"])
    r = audit.get(AUDIT, headers=fresh)
    assert (r.status_code, r.json["code"]) == (403, "forbidden")


def test_a_signed_out_session_is_refused_elsewhere_and_the_others_go_on(stack):
    user = stack.new_user("limited")
    leaving, staying = stack.token(user["email"]), stack.token(user["email"])
    orders = stack.clients["orders"]
    assert stack.clients["identity"].delete(f"{API}/sessions/current",
                                            headers=leaving).status_code == 204
    answer = wait_for(lambda: refused(orders, ORDERS, leaving), timeout=10,
                      message="orders refusing the signed-out session's token")
    assert answer.json["code"] == "token_revoked"
    assert "session" in answer.json["detail"]
    assert orders.get(ORDERS, headers=staying).status_code == 200


def test_a_password_change_ends_the_other_sessions_everywhere(stack):
    user = stack.new_user("limited")
    other, current = stack.token(user["email"]), stack.token(user["email"])
    r = stack.clients["identity"].post(f"{API}/me/password", headers=current, json={
        "current_password": TEST_PASSWORD, "new_password": "amber-tractor-meadow-91"})
    assert r.status_code == 204, r.json
    orders = stack.clients["orders"]
    wait_for(lambda: refused(orders, ORDERS, other), timeout=10,
             message="orders refusing the token of a session the password change ended")
    assert orders.get(ORDERS, headers=current).status_code == 200
