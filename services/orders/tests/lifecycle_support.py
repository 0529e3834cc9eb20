"""Helpers for the lifecycle tests: an issued order of a limited user in unit A, the people
who may (or may not) act on it, and the messages ca-signer answers with."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from chancery_shared.messaging.envelope import isoformat
from sqlalchemy import update

from .conftest import ACCOUNT, OTHER_ACCOUNT, UNIT_A, UNIT_B

ORDERS = "/api/orders/v1/orders"
SIGN, REVOKE = "ca_signer.certificate.sign", "ca_signer.certificate.revoke"
REQUESTER, ASSIGNEE = "u-req", "u-asg"
_serials = itertools.count(0xAA01)


def new_serial() -> str:
    return format(next(_serials), "x")

# Every kind of caller, as (role, who): the order belongs to REQUESTER, in unit A, and
# ASSIGNEE (a limited user of unit B) is assigned to it.
PEOPLE: dict[str, dict[str, Any]] = {
    "limited requester": {"role": "limited", "user_id": REQUESTER, "units": (UNIT_A,)},
    "limited assignee": {"role": "limited", "user_id": ASSIGNEE, "units": (UNIT_B,)},
    "other limited": {"role": "limited", "user_id": "u-other", "units": (UNIT_A,)},
    "finance": {"role": "finance", "user_id": "u-fin"},
    "unit_admin of the unit": {"role": "unit_admin", "user_id": "u-ua", "units": (UNIT_A,)},
    "unit_admin of another unit": {"role": "unit_admin", "user_id": "u-ub",
                                   "units": (UNIT_B,)},
    "admin": {"role": "admin", "user_id": "u-admin"},
    "admin of another account": {"role": "admin", "user_id": "u-oadm",
                                 "account_id": OTHER_ACCOUNT},
    "operator": {"role": "operator", "user_id": "u-op", "account_id": None},
}


def headers(harness: Any, person: str, **extra: Any) -> dict[str, str]:
    who = dict(PEOPLE[person])
    role = who.pop("role")
    return harness.headers(role, name=person.title(), **{**who, **extra})


def call(harness: Any, method: str, path: str, person: str = "admin",
         body: Any = None) -> Any:
    return harness.client.open(path, method=method, json=body,
                               headers=headers(harness, person))


def show(harness: Any, order_id: str, person: str = "admin") -> dict[str, Any]:
    answer = call(harness, "GET", f"{ORDERS}/{order_id}", person)
    assert answer.status_code == 200, answer.json
    return answer.json


def add_user(harness: Any, user_id: str, *, account_id: str = ACCOUNT, active: bool = True,
             role: str = "limited") -> None:
    harness.deliver("identity.user.created" if active else "identity.user.deactivated",
                    {"user_id": user_id, "email": f"{user_id}@example.com",
                     "name": f"Person {user_id}", "role": role, "unit_ids": [],
                     "active": active}, account_id=account_id, source="identity")


def validate_for_years(harness: Any) -> None:
    """example.com validated, and its validation good for years (for moved clocks)."""
    from chancery_orders.model import Domain

    with harness.service.uow() as uow:
        if uow.session.query(Domain).filter_by(name="example.com").count():
            return
    harness.validate_domain("example.com")
    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(
            validated_until=datetime(2035, 1, 1, tzinfo=UTC)))
        uow.commit()


def pending_order(harness: Any, csr: str, **overrides: Any) -> dict[str, Any]:
    body = {"product": "ssl_dv", "term_years": 1, "server_type": "nginx",
            "common_name": "www.example.com", "sans": ["example.com"], "csr": csr,
            "unit_id": UNIT_A, "notes": "for the shop", **overrides}
    answer = harness.client.post(ORDERS, json=body,
                                 headers=headers(harness, "limited requester"))
    assert answer.status_code == 201, answer.json
    assert answer.json["status"] == "pending_approval"
    return answer.json


def issued_event(command: dict[str, Any], leaf_pem: str, chain_pem: str, serial: str,
                 not_before: datetime, not_after: datetime) -> dict[str, Any]:
    return {"order_id": command["data"]["order_id"],
            "issuance_id": command["data"]["issuance_id"], "serial": serial,
            "issuer_id": "issuer-1", "not_before": isoformat(not_before),
            "not_after": isoformat(not_after), "sans": command["data"]["sans"],
            "certificate_pem": leaf_pem, "chain_pem": chain_pem}


def sign_commands(harness: Any, order_id: str) -> list[dict[str, Any]]:
    return [c for c in harness.outbox(SIGN) if c["data"]["order_id"] == order_id]


def answer_sign(harness: Any, command: dict[str, Any], pems: tuple[str, str], serial: str,
                not_before: datetime, days: int = 199) -> None:
    harness.deliver("ca_signer.certificate.issued",
                    issued_event(command, *pems, serial=serial, not_before=not_before,
                                 not_after=not_before + timedelta(days=days, seconds=-1)),
                    source="ca_signer", correlation_id=command["data"]["order_id"])


def issued_order(harness: Any, csr: str, pems: tuple[str, str], *, term_years: int = 1,
                 not_before: datetime | None = None, days: int = 199,
                 assign: bool = True) -> dict[str, Any]:
    """The requester's order in unit A, approved, paid and issued, with the assignee
    assigned; returns the order as the admin sees it."""
    harness.add_unit(UNIT_A, "Retail")
    harness.add_unit(UNIT_B, "Research")
    validate_for_years(harness)
    order = pending_order(harness, csr, term_years=term_years)
    approved = call(harness, "POST", f"{ORDERS}/{order['id']}/approve", "admin", {})
    assert approved.status_code == 200, approved.json
    harness.deliver("ledger.funds.reserved",
                    {"order_id": order["id"], "amount_cents": order["price_cents"],
                     "available_cents": 0}, correlation_id=order["id"])
    [command] = sign_commands(harness, order["id"])
    answer_sign(harness, command, pems, new_serial(),
                not_before or datetime.now(UTC).replace(microsecond=0), days)
    if assign:
        add_user(harness, ASSIGNEE)
        assigned = call(harness, "PUT", f"{ORDERS}/{order['id']}/assignees", "admin",
                        {"user_ids": [ASSIGNEE]})
        assert assigned.status_code == 200, assigned.json
    shown = show(harness, order["id"])
    assert shown["status"] == "issued"
    return shown


def stored_issued_order(harness: Any, csr: str, pems: tuple[str, str], *,
                        assignees: tuple[str, ...] = (ASSIGNEE,), term_years: int = 1,
                        not_before: datetime | None = None) -> str:
    """An issued order written straight to the database (no saga): the requester's, in
    unit A, assigned to ``assignees``. For the access tables, where only who may act
    matters and hundreds of orders are needed fast. Returns the order id."""
    from chancery_orders import compliance
    from chancery_orders.csrs import check_csr
    from chancery_orders.model import (
        Certificate,
        Issuance,
        Order,
        OrderAssignee,
        OrderHistory,
        new_id,
    )

    not_before = not_before or datetime.now(UTC).replace(microsecond=0)
    checked = check_csr(csr)
    order_id, issuance_id = new_id(), new_id()
    with harness.service.uow() as uow:
        order = Order(
            id=order_id, account_id=ACCOUNT, status="issued", product_code="ssl_dv",
            term_years=term_years, server_type="nginx", common_name="www.example.com",
            sans=["www.example.com", "example.com"], csr_pem=checked.pem,
            key_description=checked.key_description, unit_id=UNIT_A,
            requester_id=REQUESTER, requester_name="Limited Requester", price_cents=4900,
            plan_ends_at=compliance.add_years(not_before, term_years),
            created_at=not_before, updated_at=not_before)
        order.history = [OrderHistory(at=not_before, actor_id=REQUESTER,
                                      actor_name="Limited Requester", action="submitted",
                                      details={})]
        order.issuances = [Issuance(id=issuance_id, order_id=order_id, attempt=1,
                                    status="issued", requested_at=not_before)]
        order.assignments = [OrderAssignee(order_id=order_id, user_id=user_id,
                                           assigned_at=not_before) for user_id in assignees]
        uow.session.add(order)
        uow.session.flush()
        uow.session.add(Certificate(
            id=new_id(), order_id=order_id, issuance_id=issuance_id, serial=new_serial(),
            issuer_id="issuer-1", not_before=not_before,
            not_after=not_before + timedelta(days=199), certificate_pem=pems[0],
            chain_pem=pems[1], status="issued", created_at=not_before))
        uow.commit()
    return order_id


def prepare_account(harness: Any) -> None:
    """Units A and B, example.com validated for years, the assignee a user of the account."""
    harness.add_unit(UNIT_A, "Retail")
    harness.add_unit(UNIT_B, "Research")
    validate_for_years(harness)
    add_user(harness, ASSIGNEE)


def messages_about(harness: Any, order_id: str, type_: str | None = None) -> list[dict]:
    return [m for m in harness.outbox(type_) if m["correlation_id"] == order_id]
