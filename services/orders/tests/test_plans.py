"""Multi-year plans: certificates capped by the Baseline Requirements, reissued by the
lifecycle job before each expires (once per certificate), never beyond the term; and
expiry. The job's work is a plain function called here with a chosen ``now``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from chancery_orders import compliance
from chancery_orders.model import Issuance
from chancery_orders.service import OrdersService
from chancery_shared.config import ConfigError
from chancery_shared.messaging.envelope import isoformat
from chancery_shared.testing import make_runtime, wait_for
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from .lifecycle_support import (
    ORDERS,
    REVOKE,
    answer_sign,
    call,
    issued_order,
    show,
    sign_commands,
)

FIRST = datetime(2026, 11, 26, tzinfo=UTC)
LEAD = timedelta(days=30)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def current_expiry(harness, order_id: str) -> datetime:
    return at(show(harness, order_id)["certificate"]["not_after"])


@pytest.fixture
def plan(harness, csr, self_signed):
    """A two-year term issued on FIRST: its first certificate lasts 199 days."""
    order = issued_order(harness, csr, self_signed, term_years=2, not_before=FIRST, days=199)
    assert order["plan"] == {"ends_at": "2028-11-26T00:00:00Z", "certificates": 1}
    assert order["plan_ends_at"] == "2028-11-26T00:00:00Z"
    return order


def test_a_plan_is_reissued_once_before_its_certificate_expires(harness, plan, self_signed,
                                                                 csr):
    expiry = current_expiry(harness, plan["id"])

    assert harness.service.run_lifecycle(expiry - LEAD - timedelta(days=1)).reissued == []
    due = expiry - LEAD + timedelta(hours=1)
    assert harness.service.run_lifecycle(due).reissued == [plan["id"]]
    assert harness.service.run_lifecycle(due).reissued == []  # the job runs again
    assert harness.service.run_lifecycle(due + timedelta(days=5)).reissued == []

    first, second = sign_commands(harness, plan["id"])
    assert second["data"]["csr_pem"] == first["data"]["csr_pem"]
    assert second["data"]["sans"] == first["data"]["sans"]
    assert second["data"]["not_after"] is None  # the signer caps it: the plan goes on
    assert second["actor"] == {"system": "orders"}
    assert second["correlation_id"] == plan["id"]
    [requested] = harness.outbox("orders.order.reissue_requested")
    assert requested["data"]["automatic"] is True
    shown = show(harness, plan["id"])
    assert shown["reissue_pending"] is True
    assert shown["history"][-1]["action"] == "plan_reissue_requested"
    assert len(harness.outbox("orders.order.approved")) == 1  # no charge

    answer_sign(harness, second, self_signed, "ee05", due, days=99)

    shown = show(harness, plan["id"])
    assert shown["certificate"]["serial"] == "ee05"
    assert shown["plan"]["certificates"] == 2
    assert [c["status"] for c in shown["certificates"]] == ["issued", "issued"]
    assert harness.outbox(REVOKE) == []  # the old one runs out by itself
    [reissued] = harness.outbox("orders.order.reissued")
    assert reissued["data"]["automatic"] is True


def test_the_plans_last_certificate_ends_with_the_term_and_then_the_order_expires(
        harness, csr, self_signed):
    order = issued_order(harness, csr, self_signed, term_years=1, not_before=FIRST, days=199)
    plan_end = at(order["plan_ends_at"])
    asked: list[str | None] = []
    for serial in ("f1", "f2", "f3", "f4", "f5"):
        now = current_expiry(harness, order["id"]) - LEAD + timedelta(hours=1)
        if not harness.service.run_lifecycle(now).reissued:
            break
        command = sign_commands(harness, order["id"])[-1]
        asked.append(command["data"]["not_after"])
        until = (at(command["data"]["not_after"]) if command["data"]["not_after"]
                 else now + compliance.certificate_max_validity(now))
        answer_sign(harness, command, self_signed, serial, now, days=(until - now).days)

    assert asked[:-1] == [None] * (len(asked) - 1)
    assert asked[-1] == isoformat(plan_end) == "2027-11-26T00:00:00Z"
    # nothing more once the term is covered
    assert harness.service.run_lifecycle(plan_end - timedelta(days=1)).reissued == []
    assert harness.service.run_lifecycle(plan_end - timedelta(days=1)).expired == []

    run = harness.service.run_lifecycle(plan_end + timedelta(days=1))
    assert run.expired == [order["id"]]
    shown = show(harness, order["id"])
    assert shown["status"] == "expired"
    [expired] = harness.outbox("orders.order.expired")
    assert expired["data"] == {"order_id": order["id"],
                               "serial": shown["certificate"]["serial"]}
    assert harness.service.run_lifecycle(plan_end + timedelta(days=2)).expired == []


def test_two_workers_at_once_ask_for_one_certificate(harness, plan):
    due = current_expiry(harness, plan["id"]) - LEAD + timedelta(hours=1)
    start = threading.Barrier(3)
    runs = []

    def worker() -> None:
        start.wait()
        runs.append(harness.service.run_lifecycle(due))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(len(run.reissued) for run in runs) == [0, 0, 1]
    assert len(sign_commands(harness, plan["id"])) == 2


def test_the_database_allows_one_plan_reissue_per_certificate(harness, plan):
    certificate_id = None
    with harness.service.uow() as uow:
        from chancery_orders.model import Certificate

        certificate_id = uow.session.query(Certificate.id).scalar()
        for attempt in (7, 8):
            uow.session.add(Issuance(order_id=plan["id"], attempt=attempt, kind="plan_renewal",
                                     plan_renewal_of=certificate_id))
        with pytest.raises(IntegrityError):
            uow.session.flush()


def test_a_plan_waits_while_its_domains_need_validating_again(harness, plan):
    from chancery_orders.model import Domain

    due = current_expiry(harness, plan["id"]) - LEAD + timedelta(hours=1)
    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(validated_until=due - timedelta(days=1)))
        uow.commit()

    assert harness.service.run_lifecycle(due).waiting == [plan["id"]]
    assert harness.service.run_lifecycle(due + timedelta(hours=1)).waiting == []
    assert len(sign_commands(harness, plan["id"])) == 1
    shown = show(harness, plan["id"])
    assert [h["action"] for h in shown["history"]].count("plan_reissue_waiting") == 1
    assert shown["history"][-1]["details"]["domains"] == ["example.com"]

    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(validated_until=due + timedelta(days=200)))
        uow.commit()
    assert harness.service.run_lifecycle(due + timedelta(hours=2)).reissued == [plan["id"]]


def test_a_public_plan_waits_when_only_a_manual_review_covers_its_names(harness, plan):
    """As after the migration: a domain reviewed by the operator counts for private
    products only, so a DV plan's next certificate waits for a BR-method validation."""
    from chancery_orders.model import Domain

    due = current_expiry(harness, plan["id"]) - LEAD + timedelta(hours=1)
    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(validated_with="manual"))
        uow.commit()

    assert harness.service.run_lifecycle(due).waiting == [plan["id"]]
    assert len(sign_commands(harness, plan["id"])) == 1

    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(validated_with="dns-txt"))
        uow.commit()
    assert harness.service.run_lifecycle(due + timedelta(hours=1)).reissued == [plan["id"]]


def test_a_reissue_in_progress_holds_the_plan_back_and_the_expiry(harness, plan, csr):
    call(harness, "POST", f"{ORDERS}/{plan['id']}/reissue", "admin", {"csr": csr})
    expiry = current_expiry(harness, plan["id"])
    run = harness.service.run_lifecycle(expiry + timedelta(days=1))
    assert (run.reissued, run.expired) == ([], [])
    assert show(harness, plan["id"])["status"] == "issued"


def test_a_manual_reissue_in_a_plan_never_outlasts_the_term(harness, csr, self_signed):
    order = issued_order(harness, csr, self_signed, term_years=1,
                         not_before=datetime.now(UTC) - timedelta(days=300))
    call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin", {"csr": csr})
    command = sign_commands(harness, order["id"])[-1]
    assert command["data"]["not_after"] == order["plan_ends_at"]


def test_an_expired_order_can_be_renewed(harness, csr, self_signed):
    order = issued_order(harness, csr, self_signed, term_years=1, not_before=FIRST,
                         days=199)
    with harness.service.uow() as uow:  # a term that a single certificate covers
        from chancery_orders.model import Order

        uow.session.execute(update(Order).values(
            plan_ends_at=FIRST + timedelta(days=199)))
        uow.commit()
    harness.service.run_lifecycle(FIRST + timedelta(days=200))
    assert show(harness, order["id"])["status"] == "expired"
    renewed = call(harness, "POST", f"{ORDERS}/{order['id']}/renew", "limited requester",
                   {"csr": csr})
    assert renewed.status_code == 201
    assert renewed.json["renewal_of"] == order["id"]


# --- the rules the plan follows ----------------------------------------------------------

@pytest.mark.parametrize(("issued_at", "days"), [
    ("2026-03-14T23:59:59Z", 397),
    ("2026-03-15T00:00:00Z", 199),
    ("2027-03-15T00:00:00Z", 99),
    ("2029-03-15T00:00:00Z", 46),
])
def test_certificates_last_one_day_less_than_the_br_maximum_of_their_date(issued_at, days):
    assert compliance.certificate_max_validity(at(issued_at)) == timedelta(days=days)


def test_one_certificate_covers_a_term_when_the_rules_allow_it():
    before = at("2026-01-10T00:00:00Z")
    year = compliance.add_years(before, 1)
    assert compliance.not_after_for(year, before) == year  # 365 days fit in 397
    assert compliance.not_after_for(compliance.add_years(FIRST, 1), FIRST) is None
    assert compliance.not_after_for(None, FIRST) is None


def test_a_term_from_29_february_ends_on_28_february():
    assert compliance.add_years(at("2028-02-29T12:00:00Z"), 1) == at("2029-02-28T12:00:00Z")


# --- the job itself ------------------------------------------------------------------------


def test_the_lifecycle_job_runs_every_interval_until_stopped(tmp_path, migrated_database):
    import shutil

    shutil.copyfile(migrated_database, tmp_path / "orders.db")
    service = OrdersService(make_runtime(
        tmp_path, CHANCERY_ORDERS_LIFECYCLE_INTERVAL_SECONDS="0.01",
        CHANCERY_ORDERS_PLAN_REISSUE_DAYS="45"))
    assert service.lifecycle.reissue_before == timedelta(days=45)
    stop, passes = threading.Event(), []
    service.run_lifecycle = lambda now=None: passes.append(now)  # type: ignore[method-assign]
    assert service._lifecycle_job in service.background_jobs()
    job = threading.Thread(target=service._lifecycle_job, args=(stop,))
    job.start()
    wait_for(lambda: len(passes) >= 2, timeout=5, message="two lifecycle passes")
    stop.set()
    job.join(timeout=5)
    assert not job.is_alive()
    service.dispose()


@pytest.mark.parametrize(("variable", "value"), [
    ("CHANCERY_ORDERS_PLAN_REISSUE_DAYS", "0"),
    ("CHANCERY_ORDERS_PLAN_REISSUE_DAYS", "soon"),
    ("CHANCERY_ORDERS_LIFECYCLE_INTERVAL_SECONDS", "-1"),
])
def test_bad_lifecycle_settings_stop_the_start(tmp_path, variable, value):
    with pytest.raises(ConfigError, match=variable):
        OrdersService(make_runtime(tmp_path, **{variable: value}))


def test_the_account_is_warned_before_a_plan_reissue_would_find_its_validation_too_old(
        harness, plan):
    from chancery_orders import lifecycle
    from chancery_orders.model import Domain
    from chancery_shared.mail import RecordingMailer

    reissue_at = current_expiry(harness, plan["id"]) - LEAD
    with harness.service.uow() as uow:  # valid today, too old on the reissue day
        uow.session.execute(update(Domain).values(validated_until=reissue_at - timedelta(days=1)))
        uow.commit()
    mailer = RecordingMailer()

    def run(now):
        return lifecycle.run_lifecycle(harness.service.uow, now, reissue_before=LEAD,
                                       notice_before=timedelta(days=14), mailer=mailer)

    assert run(reissue_at - timedelta(days=20)).warned == []  # not yet within 14 days
    assert run(reissue_at - timedelta(days=10)).warned == [plan["id"]]
    assert run(reissue_at - timedelta(days=9)).warned == []  # once per certificate

    [event] = harness.outbox("orders.order.validation_needed")
    assert event["data"]["domains"] == ["example.com"]
    assert "www.example.com" in event["data"]["names"]
    assert at(event["data"]["reissue_at"]) == reissue_at
    shown = show(harness, plan["id"])
    assert [h["action"] for h in shown["history"]].count("plan_validation_needed") == 1
    [mail] = mailer.sent
    assert "example.com" in mail.subject and reissue_at.date().isoformat() in mail.subject
    assert mail.to  # the requester and the assignee, as for renewal notices


def test_no_warning_when_the_validation_will_still_be_good_on_the_reissue_day(harness, plan):
    from chancery_orders.model import Domain

    reissue_at = current_expiry(harness, plan["id"]) - LEAD
    with harness.service.uow() as uow:
        uow.session.execute(update(Domain).values(validated_until=reissue_at + timedelta(days=1)))
        uow.commit()
    assert harness.service.run_lifecycle(reissue_at - timedelta(days=10)).warned == []
    assert harness.outbox("orders.order.validation_needed") == []
