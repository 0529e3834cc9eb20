"""Who may edit, reissue, revoke, refund, assign and renew an order: every kind of caller
against every lifecycle endpoint (design/roles.md; 404 for what the caller may not see,
403 naming the permission for what they see but may not do)."""

from __future__ import annotations

import pytest

from .conftest import csr_pem
from .lifecycle_support import (
    ORDERS,
    PEOPLE,
    call,
    issued_order,
    messages_about,
    pending_order,
    prepare_account,
    show,
    stored_issued_order,
)

P = list(PEOPLE)
#                     requester assignee other  finance  ua    other ua admin  other adm operator
ON_ISSUED = {
    "reissue":          (200,     200,     404,   403,     200,  404,     200,   404,      403),
    "revoke":           (200,     200,     404,   403,     200,  404,     200,   404,      403),
    "refund":           (403,     403,     403,   403,     200,  404,     200,   404,      403),
    "assignees":        (403,     403,     403,   403,     200,  404,     200,   404,      403),
    "renew":            (201,     201,     404,   403,     201,  404,     201,   404,      403),
    "certificate":      (200,     200,     404,   403,     200,  404,     200,   404,      403),
    "read":             (200,     200,     404,   200,     200,  404,     200,   404,      403),
}
EDIT_PENDING = (403, 403, 403, 403, 200, 404, 200, 404, 403)
MISSING_PERMISSION = {
    "reissue": "reissue_certificates", "revoke": "reissue_certificates",
    "refund": "approve_orders", "assignees": "assign_certificates",
    "renew": "reissue_certificates", "certificate": "download_certificates",
    "edit": "approve_orders",
}


def _request(action: str, order_id: str, csr: str) -> tuple[str, str, object]:
    path = f"{ORDERS}/{order_id}"
    return {
        "reissue": ("POST", f"{path}/reissue", {"csr": csr}),
        "revoke": ("POST", f"{path}/revoke", {"reason": "key_compromise"}),
        "refund": ("POST", f"{path}/refund", {}),
        "assignees": ("PUT", f"{path}/assignees", {"user_ids": []}),
        "renew": ("POST", f"{path}/renew", {"csr": csr}),
        "certificate": ("GET", f"{path}/certificate?format=pem", None),
        "read": ("GET", path, None),
        "edit": ("PATCH", path, {"notes": "edited"}),
    }[action]


CASES = [(action, person, expected[i]) for action, expected in ON_ISSUED.items()
         for i, person in enumerate(P)]


@pytest.fixture(scope="module")
def account(shared_harness):
    prepare_account(shared_harness)
    return shared_harness


@pytest.mark.parametrize(("action", "person", "status"), CASES,
                         ids=[f"{a}-{p}" for a, p, _ in CASES])
def test_who_may_act_on_an_issued_order(account, csr, self_signed, action, person, status):
    harness = account
    order_id = stored_issued_order(harness, csr, self_signed)
    before = show(harness, order_id)
    method, path, body = _request(action, order_id, csr)

    answer = call(harness, method, path, person, body)

    assert answer.status_code == status, answer.json
    if status == 403 and person != "operator":  # the operator lacks the view's permission
        assert answer.json["missing_permission"] == MISSING_PERMISSION[action]
    if status >= 400:
        # refused: the order is as it was and nothing was said about it
        assert show(harness, order_id) == before
        assert messages_about(harness, order_id) == []


@pytest.mark.parametrize(("person", "status"), list(zip(P, EDIT_PENDING, strict=True)),
                         ids=P)
def test_who_may_edit_a_pending_order(account, csr, person, status):
    from .lifecycle_support import ASSIGNEE

    harness = account
    order = pending_order(harness, csr)
    call(harness, "PUT", f"{ORDERS}/{order['id']}/assignees", "admin",
         {"user_ids": [ASSIGNEE]})

    answer = call(harness, "PATCH", f"{ORDERS}/{order['id']}", person, {"notes": "edited"})

    assert answer.status_code == status, answer.json
    if status == 200:
        assert answer.json["notes"] == "edited"
    else:
        assert messages_about(harness, order["id"], "orders.order.edited") == []
        assert show(harness, order["id"])["notes"] == "for the shop"
    if status == 403 and person != "operator":
        assert answer.json["missing_permission"] == "approve_orders"


def test_a_unit_admin_who_requested_for_another_unit_may_reissue_but_not_refund(
        harness, csr, self_signed):
    """Their own order: they act as its requester, not as its approver."""
    from .conftest import UNIT_B

    order = issued_order(harness, csr, self_signed)
    call(harness, "PUT", f"{ORDERS}/{order['id']}/assignees", "admin", {"user_ids": []})
    as_requester = {"role": "unit_admin", "user_id": "u-req", "units": (UNIT_B,)}
    heads = harness.headers(**as_requester)
    refund = harness.client.post(f"{ORDERS}/{order['id']}/refund", json={}, headers=heads)
    assert refund.status_code == 403
    assert refund.json["missing_permission"] == "approve_orders"
    reissue = harness.client.post(f"{ORDERS}/{order['id']}/reissue", json={"csr": csr},
                                  headers=heads)
    assert reissue.status_code == 200, reissue.json


def test_a_finance_user_acts_on_an_order_they_requested_or_were_assigned(
        harness, csr, self_signed, ec_key):
    from .lifecycle_support import add_user

    order = issued_order(harness, csr, self_signed)
    add_user(harness, "u-fin", role="finance")
    assigned = call(harness, "PUT", f"{ORDERS}/{order['id']}/assignees", "admin",
                    {"user_ids": ["u-fin"]})
    assert assigned.status_code == 200
    finance = harness.headers("finance", user_id="u-fin")
    download = harness.client.get(f"{ORDERS}/{order['id']}/certificate?format=pem",
                                  headers=finance)
    assert download.status_code == 200
    reissue = harness.client.post(f"{ORDERS}/{order['id']}/reissue",
                                  json={"csr": csr_pem(ec_key)}, headers=finance)
    assert reissue.status_code == 200, reissue.json
