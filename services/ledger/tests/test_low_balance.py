"""The low-balance warning: once per crossing of the threshold, an event in the same
transaction, and an e-mail to the account's finance users and admins sent after commit."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
from chancery_ledger.handlers import verify_balances
from chancery_ledger.model import PendingNotice, RosterMember
from chancery_shared.mail import RecordingMailer
from chancery_shared.messaging.envelope import Actor, Context, Envelope, new_envelope, utcnow
from sqlalchemy import select, update

from .conftest import order_event, outbox

APPROVED = "orders.order.approved"
LOW = "ledger.balance.low"


@pytest.fixture
def customer(login):
    """An admin whose account holds $100.00 and is warned below $50.00."""
    caller = login("admin")
    assert caller.deposit_card(10_000).json["status"] == "settled"
    assert warn_below(caller, 5_000).status_code == 200
    return caller


def warn_below(caller, cents, enabled=True):
    return caller.client.put("/api/ledger/v1/settings/low-balance", headers=caller.headers,
                             json={"threshold_cents": cents, "enabled": enabled})


def reserve(consumer, caller, order_id: str, cents: int) -> None:
    consumer.handle(order_event(APPROVED, caller.account_id, order_id, price_cents=cents))


def release(consumer, caller, order_id: str) -> None:
    consumer.handle(order_event("orders.order.cancelled", caller.account_id, order_id))


def books_ok(service) -> None:
    with service.uow() as uow:
        result = verify_balances(uow)
    assert result.ok, result.discrepancies


def user_event(type_: str, account_id: str, *, role: str, email: str,
               user_id: str | None = None, **data) -> Envelope:
    """A user event as identity publishes it."""
    user_id = user_id or str(uuid.uuid4())
    return new_envelope(
        type=type_, source="identity",
        context=Context(actor=Actor(user_id=str(uuid.uuid4()), user_name="Root Admin"),
                        account_id=account_id),
        subject_type="user", subject_id=user_id, summary=f"test {type_}",
        data={"user_id": user_id, "email": email, "name": email.split("@")[0], "role": role,
              "unit_ids": [], **data})


def roster(consumer, account_id: str, other_account: str) -> None:
    """Everyone who could be mailed; only the first two should be."""
    people = [("admin", "ada@example.com"), ("finance", "fin@example.com"),
              ("limited", "lim@example.com"), ("unit_admin", "una@example.com")]
    for role, email in people:
        consumer.handle(user_event("identity.user.created", account_id, role=role, email=email))
    gone = user_event("identity.user.created", account_id, role="finance",
                      email="gone@example.com")
    consumer.handle(gone)
    consumer.handle(user_event("identity.user.deactivated", account_id, role="finance",
                               email="gone@example.com", user_id=gone.data["user_id"],
                               active=False))
    consumer.handle(user_event("identity.user.created", other_account, role="admin",
                               email="elsewhere@example.com"))


def notices(service) -> list[PendingNotice]:
    with service.uow() as uow:
        return list(uow.session.execute(select(PendingNotice)).scalars())


# --- the setting -------------------------------------------------------------------------


def test_the_setting_is_off_until_set_and_changes_emit_an_event(login, service):
    admin = login("admin")
    assert admin.get("/settings/low-balance").json == {"threshold_cents": 0, "enabled": False}
    response = warn_below(admin, 2_500)
    assert response.status_code == 200
    assert response.json == {"threshold_cents": 2_500, "enabled": True}
    assert admin.get("/settings/low-balance").json == {"threshold_cents": 2_500,
                                                       "enabled": True}
    (event,) = outbox(service, "ledger.settings.low_balance_changed")
    assert event["data"] == {"threshold_cents": 2_500, "enabled": True}
    assert event["account_id"] == admin.account_id
    assert "set the low-balance warning to warn below $25.00" in event["summary"]
    assert event["summary"].startswith("Admin ")


@pytest.mark.parametrize("body, field", [
    ({"threshold_cents": -1, "enabled": True}, "threshold_cents"),
    ({"threshold_cents": 10.5, "enabled": True}, "threshold_cents"),
    ({"threshold_cents": "100", "enabled": True}, "threshold_cents"),
    ({"threshold_cents": 10**15, "enabled": True}, "threshold_cents"),
    ({"threshold_cents": None, "enabled": True}, "threshold_cents"),
    ({"enabled": True}, "threshold_cents"),
    ({"threshold_cents": 100, "enabled": "yes"}, "enabled"),
    ({"threshold_cents": 100, "enabled": 1}, "enabled"),
    ({"threshold_cents": 100}, "enabled"),
])
def test_a_bad_setting_is_422_naming_the_field(login, service, body, field):
    admin = login("admin")
    response = admin.client.put("/api/ledger/v1/settings/low-balance", headers=admin.headers,
                                json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"]
    assert outbox(service, "ledger.settings.low_balance_changed") == []


@pytest.mark.parametrize("role, status", [("admin", 200), ("finance", 200),
                                          ("unit_admin", 403), ("limited", 403)])
def test_only_admins_and_finance_set_the_threshold(login, role, status):
    caller = login(role)
    response = warn_below(caller, 100)
    assert response.status_code == status
    if status == 403:
        assert response.json["missing_permission"] == "deposit_funds"
        assert caller.get("/settings/low-balance").status_code == 403


# --- crossings -----------------------------------------------------------------------------


def test_falling_below_the_threshold_warns_once_until_the_balance_is_back(
        customer, consumer, service):
    reserve(consumer, customer, "o-1", 3_000)   # 7,000: above
    assert outbox(service, LOW) == []
    reserve(consumer, customer, "o-2", 3_000)   # 4,000: crossed
    (low,) = outbox(service, LOW)
    assert low["data"] == {"available_cents": 4_000, "threshold_cents": 5_000}
    assert low["subject"] == {"type": "account", "id": customer.account_id}
    assert low["account_id"] == customer.account_id
    assert "fell below $50.00" in low["summary"] and "$40.00 available" in low["summary"]
    reserve(consumer, customer, "o-3", 1_000)   # 3,000: still below, no second warning
    assert len(outbox(service, LOW)) == 1
    release(consumer, customer, "o-2")          # 6,000: back above, re-armed
    release(consumer, customer, "o-3")          # 7,000
    assert len(outbox(service, LOW)) == 1
    reserve(consumer, customer, "o-4", 2_500)   # 4,500: a second crossing
    assert [m["data"]["available_cents"] for m in outbox(service, LOW)] == [4_000, 4_500]
    assert len(notices(service)) == 2
    books_ok(service)


def test_landing_exactly_on_the_threshold_is_not_low(customer, consumer, service):
    reserve(consumer, customer, "o-1", 5_000)
    assert outbox(service, LOW) == []
    reserve(consumer, customer, "o-2", 1)
    assert len(outbox(service, LOW)) == 1


def test_an_allocation_to_a_unit_can_cross_the_threshold(customer, service):
    response = customer.post("/units/unit-1/funds", {"amount_cents": 6_000})
    assert response.status_code == 201
    assert [m["data"]["available_cents"] for m in outbox(service, LOW)] == [4_000]
    books_ok(service)


def test_a_threshold_set_while_already_below_waits_for_a_real_crossing(login, consumer,
                                                                       service):
    admin = login("admin")
    admin.deposit_card(1_000)
    warn_below(admin, 5_000)
    reserve(consumer, admin, "o-1", 100)
    assert outbox(service, LOW) == []
    admin.deposit_card(9_000)                   # 9,900: above, armed
    reserve(consumer, admin, "o-2", 5_000)      # 4,900: crossed
    assert len(outbox(service, LOW)) == 1


def test_a_disabled_warning_stays_silent(customer, consumer, service):
    warn_below(customer, 5_000, enabled=False)
    reserve(consumer, customer, "o-1", 9_000)
    assert outbox(service, LOW) == []
    assert notices(service) == []


def test_a_redelivered_reservation_warns_once(customer, consumer, service):
    approved = order_event(APPROVED, customer.account_id, "o-1", price_cents=6_000)
    consumer.handle(approved)
    consumer.handle(approved)
    consumer.handle(order_event(APPROVED, customer.account_id, "o-1", price_cents=6_000))
    assert len(outbox(service, LOW)) == 1
    assert len(notices(service)) == 1


# --- the e-mail ------------------------------------------------------------------------------


def test_the_notice_goes_to_the_accounts_active_finance_users_and_admins_only(
        customer, consumer, service, login):
    roster(consumer, customer.account_id, login("admin").account_id)
    service.mailer = RecordingMailer()
    reserve(consumer, customer, "o-1", 6_000)
    run = service.send_notices()
    assert len(run.sent) == 1
    (mail,) = service.mailer.sent
    assert mail.to == ("ada@example.com", "fin@example.com")
    assert "$40.00" in mail.subject and "$50.00" in mail.body
    assert service.send_notices().sent == []      # sent once, never again
    assert len(service.mailer.sent) == 1
    (notice,) = notices(service)
    assert (notice.status, notice.sent_to) == ("sent", "ada@example.com, fin@example.com")


def test_an_smtp_failure_keeps_the_notice_and_a_later_pass_sends_it(customer, consumer,
                                                                    service, login):
    roster(consumer, customer.account_id, login("admin").account_id)
    service.mailer = RecordingMailer(fail=True)
    reserve(consumer, customer, "o-1", 6_000)
    now = utcnow()
    failed = service.send_notices(now)
    assert (failed.sent, len(failed.failed)) == ([], 1)
    (notice,) = notices(service)
    assert (notice.status, notice.attempts) == ("pending", 1)
    assert "told to fail" in notice.last_error
    service.mailer.fail = False
    assert service.send_notices(now).sent == []   # not before its retry time
    later = service.send_notices(now + timedelta(minutes=2))
    assert later.sent == [notice.id]
    assert len(service.mailer.sent) == 1
    assert service.send_notices(now + timedelta(hours=3)).sent == []


def test_a_notice_claimed_by_another_worker_is_not_sent_twice(customer, consumer, service,
                                                             login):
    roster(consumer, customer.account_id, login("admin").account_id)
    service.mailer = RecordingMailer()
    reserve(consumer, customer, "o-1", 6_000)
    now = utcnow()
    with service.uow() as uow:
        uow.session.execute(update(PendingNotice).values(claimed_until=now + timedelta(minutes=5)))
        uow.commit()
    assert service.send_notices(now).sent == []
    assert service.mailer.sent == []
    assert len(service.send_notices(now + timedelta(minutes=6)).sent) == 1  # claim expired


def test_without_smtp_the_event_is_emitted_and_the_mail_skipped(customer, consumer, service,
                                                                login):
    roster(consumer, customer.account_id, login("admin").account_id)
    assert service.mailer is None  # no CHANCERY_SMTP_HOST in the tests' environment
    reserve(consumer, customer, "o-1", 6_000)
    assert len(outbox(service, LOW)) == 1
    run = service.send_notices()
    assert (run.sent, len(run.skipped)) == ([], 1)
    (notice,) = notices(service)
    assert (notice.status, notice.last_error) == ("skipped", "no SMTP host configured")


# --- the roster ------------------------------------------------------------------------------


def test_user_events_keep_one_roster_row_and_an_older_event_never_wins(consumer, service):
    account = str(uuid.uuid4())
    created = user_event("identity.user.created", account, role="limited",
                         email="sam@example.com")
    user_id = created.data["user_id"]
    promoted = user_event("identity.user.updated", account, role="finance",
                          email="sam@example.com", user_id=user_id,
                          changes={"role": ["limited", "finance"]})
    stale = dataclasses.replace(
        user_event("identity.user.updated", account, role="limited", email="old@example.com",
                   user_id=user_id),
        occurred_at="2020-01-01T00:00:00Z")
    for message in (created, created, promoted, stale):
        consumer.handle(message)
    with service.uow() as uow:
        (member,) = uow.session.execute(select(RosterMember)).scalars().all()
    assert (member.user_id, member.customer_account_id, member.role, member.email,
            member.active) == (user_id, account, "finance", "sam@example.com", True)
