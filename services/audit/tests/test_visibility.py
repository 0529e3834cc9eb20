"""Who reads which entries: roles.md's 'read the audit log' row, and nothing more."""

from __future__ import annotations

import pytest
from chancery_audit.model import AuditEntry
from sqlalchemy import select

ACCOUNT = "acct-" + "a" * 31  # the conftest's default account
OTHER_ACCOUNT = "acct-" + "b" * 31
ENDPOINTS = ("/api/audit/v1/entries", "/api/audit/v1/entries.csv")


@pytest.fixture
def audit(audit_on_each_database):
    """Each reader on SQLite and on PostgreSQL."""
    return audit_on_each_database


@pytest.fixture
def entries(record, audit) -> dict[str, str]:
    """Entry ids by label: two accounts, two units, an order's later step, the platform."""
    approved = {"price_cents": 100}
    envelopes = {
        "a_unit1": record("orders.order.approved", correlation_id="o1",
                          data={"order_id": "o1", "unit_id": "u1", **approved}),
        "a_unit1_later": record("ledger.funds.reserved", system="ledger", correlation_id="o1",
                                data={"order_id": "o1", "amount_cents": 100,
                                      "available_cents": 0}),
        "a_unit2": record("orders.order.approved",
                          data={"order_id": "o2", "unit_id": "u2", **approved}),
        "a_no_unit": record("ledger.deposit.settled", system="ledger", subject=("deposit", "d1"),
                            data={"deposit_id": "d1", "method": "card", "amount_cents": 500}),
        "b_unit1": record("orders.order.approved", account_id=OTHER_ACCOUNT,
                          data={"order_id": "o3", "unit_id": "u1", **approved}),
        "platform": record("identity.user.created", account_id=None, system="identity",
                           subject=("user", "op1"),
                           data={"user_id": "op1", "email": "op@chancery.local",
                                 "name": "Operator", "role": "operator", "unit_ids": []}),
    }
    with audit.uow() as uow:
        id_of = dict(uow.session.execute(select(AuditEntry.event_id, AuditEntry.id)).all())
    return {label: id_of[envelope.event_id] for label, envelope in envelopes.items()}


A_ALL = {"a_unit1", "a_unit1_later", "a_unit2", "a_no_unit"}


@pytest.mark.parametrize(("role", "account", "units", "params", "expected"), [
    ("admin", ACCOUNT, (), {}, A_ALL),
    ("unit_admin", ACCOUNT, ("u1",), {}, {"a_unit1", "a_unit1_later"}),
    ("unit_admin", ACCOUNT, ("u1", "u2"), {}, {"a_unit1", "a_unit1_later", "a_unit2"}),
    ("unit_admin", ACCOUNT, (), {}, set()),
    ("unit_admin", ACCOUNT, ("u9",), {}, set()),
    ("admin", OTHER_ACCOUNT, (), {}, {"b_unit1"}),
    ("admin", OTHER_ACCOUNT, (), {"account_id": ACCOUNT}, set()),  # never another's
    ("unit_admin", OTHER_ACCOUNT, ("u1",), {}, {"b_unit1"}),
    # the units' own rows (time, action) and free text never cross into another account
    ("unit_admin", ACCOUNT, ("u1",), {"q": "did"}, {"a_unit1", "a_unit1_later"}),
    ("unit_admin", ACCOUNT, ("u1",), {"action": "orders"}, {"a_unit1"}),
    ("unit_admin", OTHER_ACCOUNT, ("u1",), {"action": "orders", "q": "did"}, {"b_unit1"}),
    # asking for another account reads nothing, by whichever path the filter takes
    ("unit_admin", OTHER_ACCOUNT, ("u1",), {"account_id": ACCOUNT}, set()),
    ("unit_admin", OTHER_ACCOUNT, ("u1",), {"account_id": ACCOUNT, "action": "orders"}, set()),
    ("unit_admin", OTHER_ACCOUNT, ("u1",), {"account_id": ACCOUNT, "q": "did"}, set()),
    ("admin", OTHER_ACCOUNT, (), {"account_id": ACCOUNT, "q": "did"}, set()),
    ("operator", None, (), {}, A_ALL | {"b_unit1", "platform"}),
    ("operator", None, (), {"account_id": OTHER_ACCOUNT}, {"b_unit1"}),
])
def test_each_reader_sees_exactly_their_entries(role, account, units, params, expected,
                                                entries, client, as_role):
    label_of = {entry_id: label for label, entry_id in entries.items()}
    headers = as_role(role, account_id=account, unit_ids=units)

    response = client.get(ENDPOINTS[0], query_string=params, headers=headers)
    assert response.status_code == 200
    assert {label_of[item["id"]] for item in response.json["items"]} == expected

    csv_text = client.get(ENDPOINTS[1], query_string=params, headers=headers).get_data(
        as_text=True)
    assert {label_of[line.split(",")[0]] for line in csv_text.splitlines()[1:]} == expected

    if not params:  # one entry at a time: the same rule, and 404 for the rest
        for label, entry_id in entries.items():
            detail = client.get(f"{ENDPOINTS[0]}/{entry_id}", headers=headers)
            assert detail.status_code == (200 if label in expected else 404), label


def test_the_detail_of_an_entry_carries_its_units_and_whole_message(entries, client, as_role):
    response = client.get(f"{ENDPOINTS[0]}/{entries['a_unit1_later']}",
                          headers=as_role("unit_admin", unit_ids=("u1",)))

    assert response.status_code == 200
    body = response.json
    assert body["unit_ids"] == ["u1"]
    assert body["message"]["type"] == "ledger.funds.reserved"
    assert body["message"]["data"]["order_id"] == "o1"
    assert (body["subject_type"], body["subject_id"], body["sequence"]) == ("order", "o1", 2)


@pytest.mark.parametrize("role", ["limited", "finance"])
@pytest.mark.parametrize("path", [*ENDPOINTS, "/api/audit/v1/entries/some-id"])
def test_roles_that_may_never_read_the_log_are_refused_naming_the_permission(
        role, path, client, as_role):
    response = client.get(path, headers=as_role(role))

    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert response.json["missing_permission"] == "read_audit_log"


@pytest.mark.parametrize("path", [*ENDPOINTS, "/api/audit/v1/entries/some-id"])
def test_a_caller_without_a_token_is_asked_to_authenticate(path, client):
    response = client.get(path)

    assert response.status_code == 401
    assert response.content_type == "application/problem+json"

