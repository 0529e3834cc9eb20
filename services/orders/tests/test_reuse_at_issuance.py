"""Validation reuse is judged on the day a certificate is signed (BR 4.2.1).

orders checks every name again right before it asks for a signature and sends the
evidence with the command; an order whose evidence has aged out waits in
``awaiting_validation`` (its money held, nothing charged) and is signed once the domain
is validated again. ca-signer's own refusal (``validation_expired``) leads to the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chancery_orders.compliance import reusable_until
from chancery_orders.model import Domain
from chancery_shared.messaging.envelope import utcnow
from sqlalchemy import select, update

from .conftest import ACCOUNT
from .issuing import SIGN

ORDERS = "/api/orders/v1/orders"


def age_domains(harness, validated_at: datetime) -> None:
    """Pretend the account's validations were made at ``validated_at``."""
    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(
            validated_at=validated_at, validated_until=reusable_until(validated_at)))
        uow.commit()


def revalidate(harness, name: str = "example.com") -> None:
    """Validate the account's existing domain ``name`` again by DNS change (its token was
    spent by the last validation: the new one is published and checked)."""
    with harness.service.uow() as uow:
        domain_id = uow.session.execute(
            select(Domain.id).where(Domain.name == name, Domain.account_id == ACCOUNT)
        ).scalar_one()
    domain = harness.client.get(f"/api/orders/v1/domains/{domain_id}",
                                headers=harness.headers("admin"))
    assert domain.status_code == 200, domain.json
    harness.check_by_dns(domain.json)


def approved_order(harness, order_body) -> dict:
    harness.validate_domain("example.com")
    answer = harness.client.post(ORDERS, json=order_body(), headers=harness.headers("admin"))
    assert answer.status_code == 201, answer.json
    assert answer.json["status"] == "approved"
    return answer.json


def reserve(harness, order: dict) -> None:
    harness.deliver("ledger.funds.reserved", {"order_id": order["id"],
                                              "amount_cents": order["price_cents"],
                                              "available_cents": 0},
                    correlation_id=order["id"])


def show(harness, order_id: str) -> dict:
    answer = harness.client.get(f"{ORDERS}/{order_id}", headers=harness.headers("admin"))
    assert answer.status_code == 200
    return answer.json


def events_of(harness, type_: str, order_id: str) -> list[dict]:
    return [e for e in harness.outbox(type_) if e["data"].get("order_id") == order_id]


def test_the_sign_command_carries_the_evidence_it_rests_on(harness, order_body):
    order = approved_order(harness, order_body)
    reserve(harness, order)
    [command] = events_of(harness, SIGN, order["id"])
    [evidence] = command["data"]["validations"]
    assert evidence["kind"] == "domain" and evidence["name"] == "example.com"
    assert evidence["names"] == ["www.example.com"]
    validated_at = datetime.fromisoformat(evidence["validated_at"])
    assert utcnow() - validated_at < timedelta(minutes=5)


def test_an_order_whose_validation_aged_out_waits_without_a_command(harness, order_body):
    order = approved_order(harness, order_body)
    # 250 days ago: too old under the 200-day rule in force now
    age_domains(harness, utcnow() - timedelta(days=250))

    reserve(harness, order)

    shown = show(harness, order["id"])
    assert shown["status"] == "awaiting_validation"
    assert "www.example.com" in shown["failure_reason"]
    assert "example.com" in shown["failure_reason"]
    assert events_of(harness, SIGN, order["id"]) == []
    assert events_of(harness, "orders.order.failed", order["id"]) == []  # money stays held
    [waiting] = events_of(harness, "orders.order.awaiting_validation", order["id"])
    assert waiting["data"]["names"] == ["www.example.com"]
    assert waiting["data"]["organization"] is False


def test_a_new_validation_resumes_the_waiting_order(harness, order_body):
    order = approved_order(harness, order_body)
    age_domains(harness, utcnow() - timedelta(days=250))
    reserve(harness, order)
    assert show(harness, order["id"])["status"] == "awaiting_validation"

    revalidate(harness)

    shown = show(harness, order["id"])
    assert shown["status"] == "issuing"
    assert shown["failure_reason"] is None
    [command] = events_of(harness, SIGN, order["id"])
    assert utcnow() - datetime.fromisoformat(
        command["data"]["validations"][0]["validated_at"]) < timedelta(minutes=5)


def test_a_validation_still_fresh_today_is_used_as_is(harness, order_body):
    order = approved_order(harness, order_body)
    validated_at = utcnow() - timedelta(days=150)  # within the 200 days in force now
    if reusable_until(validated_at) <= utcnow():
        pytest.skip("from 2027-03-15 on, 150 days is too old: the next test covers it")
    age_domains(harness, validated_at)
    reserve(harness, order)
    assert show(harness, order["id"])["status"] == "issuing"
    [command] = events_of(harness, SIGN, order["id"])
    assert datetime.fromisoformat(command["data"]["validations"][0]["validated_at"]) \
        == validated_at


def test_the_signers_validation_expired_refusal_makes_the_order_wait(harness, order_body):
    order = approved_order(harness, order_body)
    reserve(harness, order)
    [command] = events_of(harness, SIGN, order["id"])

    harness.deliver("ca_signer.certificate.rejected", {
        "order_id": order["id"], "issuance_id": command["data"]["issuance_id"],
        "reason": "no domain validation reusable on 2027-04-01 (100 days, BR 4.2.1) covers "
                  "www.example.com", "lint_findings": [], "code": "validation_expired",
        "names": ["www.example.com"], "organization": False},
        source="ca_signer", correlation_id=order["id"])

    shown = show(harness, order["id"])
    assert shown["status"] == "awaiting_validation"
    assert shown["failure_reason"].startswith("ca-signer: no domain validation reusable")
    assert events_of(harness, "orders.order.failed", order["id"]) == []
    # a fresh validation asks again, with a new issuance
    revalidate(harness)
    commands = events_of(harness, SIGN, order["id"])
    assert len(commands) == 2
    assert commands[1]["data"]["issuance_id"] != command["data"]["issuance_id"]


def test_any_other_refusal_still_fails_the_order(harness, order_body):
    order = approved_order(harness, order_body)
    reserve(harness, order)
    [command] = events_of(harness, SIGN, order["id"])
    harness.deliver("ca_signer.certificate.rejected", {
        "order_id": order["id"], "issuance_id": command["data"]["issuance_id"],
        "reason": "lint", "lint_findings": []}, source="ca_signer", correlation_id=order["id"])
    assert show(harness, order["id"])["status"] == "failed"


def test_a_waiting_order_can_be_cancelled_and_its_money_released(harness, order_body):
    order = approved_order(harness, order_body)
    age_domains(harness, utcnow() - timedelta(days=250))
    reserve(harness, order)
    answer = harness.client.post(f"{ORDERS}/{order['id']}/cancel", json={"reason": "later"},
                                 headers=harness.headers("admin"))
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "cancelled"
    assert len(events_of(harness, "orders.order.cancelled", order["id"])) == 1


def test_only_the_waiting_orders_of_the_validated_account_resume(harness, order_body):
    order = approved_order(harness, order_body)
    age_domains(harness, utcnow() - timedelta(days=250))
    reserve(harness, order)
    other = "acct-" + "9" * 31
    harness.validate_domain("example.com", account_id=other)
    assert show(harness, order["id"])["status"] == "awaiting_validation"
    assert ACCOUNT != other


def test_the_domain_shows_until_when_it_can_back_a_certificate(harness):
    before = utcnow()
    domain = harness.validate_domain("example.com")
    until = datetime.fromisoformat(domain["reusable_until"])
    assert until == datetime.fromisoformat(domain["validated_until"])
    assert reusable_until(before) <= until <= reusable_until(utcnow())


def test_the_migration_moves_stored_dates_to_the_signing_day_rule(tmp_path):
    from chancery_orders.service import OrdersService
    from chancery_shared import migrations
    from chancery_shared.testing import make_runtime
    from sqlalchemy import text

    service = OrdersService(make_runtime(tmp_path))
    try:
        migrations.upgrade(service.migrations_dir, service.engine, "316b6a8e03f1")
        validated = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
        with service.uow() as uow:  # a validation dated by the old rule: + 200 days
            uow.session.add(Domain(
                id="d-1", account_id=ACCOUNT, name="example.com", method="dns-txt",
                status="validated", token="t", submitted_by_id="u", submitted_by_name="U",
                validated_at=validated, validated_until=validated + timedelta(days=200),
                validated_with="dns-txt"))
            uow.commit()
        migrations.upgrade(service.migrations_dir, service.engine)
        with service.uow() as uow:
            until = uow.session.execute(
                text("SELECT validated_until FROM domains")).scalar_one()
            domain = uow.session.get(Domain, "d-1")
            assert domain.validated_until == datetime(2027, 3, 16, 9, 30, tzinfo=UTC) + \
                timedelta(microseconds=1), until
    finally:
        service.dispose()
