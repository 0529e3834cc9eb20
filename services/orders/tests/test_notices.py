"""Renewal notices: the settings over HTTP, and the job mailing each notice exactly once
through a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import email
import logging
import socket
import threading
from datetime import UTC, datetime, timedelta
from email import policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from chancery_orders.mailer import Mail, MailNotSent, RecordingMailer, SmtpMailer, SmtpSettings
from chancery_orders.model import Order
from chancery_orders.notices import NoticePlan, RenewalNotices, RenewalNoticeSent, due_notice
from chancery_shared.config import ConfigError
from sqlalchemy import insert, select

from .conftest import ACCOUNT, OTHER_ACCOUNT, UNIT_A, UNIT_B
from .issuing import ORDERS, at, certificate_pem, issue, place

ACCOUNT_NOTICES = "/api/orders/v1/renewal-notices"
NOT_BEFORE = at("2026-06-01T00:00:00Z")
NOT_AFTER = at("2027-06-01T00:00:00Z")
SENDER = "Chancery PKI <pki@chancery.example>"
DAY = timedelta(days=1)


def left(days: float) -> datetime:
    """The moment ``days`` days before the test certificate expires."""
    return NOT_AFTER - timedelta(days=days)


# --- a real SMTP server ------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, sorted(envelope.rcpt_tos), message))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret"
        return AuthResult(success=ok)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(),
                            authenticator=inbox.authenticate, auth_require_tls=False)
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def inbox(smtp_server):
    _, inbox = smtp_server
    inbox.messages.clear()
    inbox.logins.clear()
    return inbox


def smtp_environment(smtp_server, **extra: str) -> dict[str, str]:
    controller, _ = smtp_server
    return {"CHANCERY_SMTP_HOST": "127.0.0.1", "CHANCERY_SMTP_PORT": str(controller.port),
            "CHANCERY_SMTP_FROM": SENDER, **extra}


@pytest.fixture
def job(harness, smtp_server, inbox):
    """The job as the service builds it from the environment, sending to the loopback server."""
    return RenewalNotices.from_environment(harness.service.uow, smtp_environment(smtp_server))


# --- an issued order with people around it --------------------------------------------------


def add_user(harness, user_id, email_address, *, active=True, account_id=ACCOUNT):
    type_ = "identity.user.created" if active else "identity.user.deactivated"
    harness.deliver(type_, {"user_id": user_id, "email": email_address,
                            "name": user_id.title(), "role": "limited", "unit_ids": [],
                            "active": active}, account_id=account_id, source="identity")


def assign(harness, order_id, user_id):
    table = harness.service.metadata.tables["order_assignees"]
    with harness.service.engine.begin() as connection:
        connection.execute(insert(table).values(order_id=order_id, user_id=user_id,
                                                assigned_at=datetime.now(UTC)))


def issued(harness, key, *, common_name="www.example.com", requester="u-req",
           not_after=NOT_AFTER, not_before=NOT_BEFORE, term_years=1):
    """A limited user's order in unit A, approved by an admin and issued."""
    order = place(harness, key, role="limited", user_id=requester, common_name=common_name,
                  units=(UNIT_A,), name="Rita Requester", term_years=term_years)
    approved = harness.client.post(f"{ORDERS}/{order['id']}/approve", json={},
                                   headers=harness.headers("admin"))
    assert approved.status_code == 200, approved.json
    issue(harness, approved.json, not_before=not_before, not_after=not_after,
          leaf_pem=certificate_pem(key, common_name))
    return approved.json


@pytest.fixture
def order(harness, rsa_key):
    """Issued for a year; requester, an assignee and an extra address of the account."""
    harness.add_unit(UNIT_A, "Retail")
    harness.validate_domain("example.com")
    add_user(harness, "u-req", "rita@example.com")
    add_user(harness, "u-ass", "sam@example.com")
    order = issued(harness, rsa_key)
    assign(harness, order["id"], "u-ass")
    put = harness.client.put(ACCOUNT_NOTICES, json={"days_before": [90, 60, 30, 7, 3],
                                                    "emails": ["pki-team@example.com"]},
                             headers=harness.headers("admin"))
    assert put.status_code == 200, put.json
    return order


def claims(harness):
    with harness.service.uow() as uow:
        return list(uow.session.execute(select(RenewalNoticeSent)).scalars())


# --- the job, end to end through SMTP --------------------------------------------------------


def test_a_due_notice_is_mailed_to_requester_assignees_and_extra_addresses_once(
        harness, order, job, inbox):
    now = left(29.5)

    report = job.run(now)

    assert report.sent == [(order["id"], 30)]
    [(sender, recipients, message)] = inbox.messages
    assert sender == "pki@chancery.example"
    assert recipients == ["pki-team@example.com", "rita@example.com", "sam@example.com"]
    assert message["From"] == SENDER
    assert message["Subject"] == ("Renewal notice: the certificate for www.example.com expires "
                                  "in 30 days (2027-06-01)")
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert order["id"] in body and "2027-06-01 00:00 UTC" in body
    assert f"POST /api/orders/v1/orders/{order['id']}/renew" in body
    [event] = harness.outbox("orders.renewal.notice_sent")
    [claim] = claims(harness)
    assert event["data"] == {"order_id": order["id"], "days_left": 30,
                             "recipients": ["rita@example.com", "sam@example.com",
                                            "pki-team@example.com"],
                             "serial": claim.serial, "days_before": 30}
    assert event["correlation_id"] == order["id"]
    assert event["account_id"] == ACCOUNT
    assert event["actor"] == {"system": "orders"}
    assert "30-day renewal notice" in event["summary"] and "rita@example.com" in event["summary"]
    assert claim.sent_at == now and claim.recipients == event["data"]["recipients"]

    again = job.run(now + timedelta(hours=1))

    assert again.sent == [] and len(inbox.messages) == 1
    assert len(harness.outbox("orders.renewal.notice_sent")) == 1


def test_two_workers_at_once_send_each_notice_exactly_once(harness, rsa_key, order, job,
                                                           smtp_server, inbox):
    others = [issued(harness, rsa_key, common_name=f"host{n}.example.com") for n in range(3)]
    second = RenewalNotices.from_environment(harness.service.uow, smtp_environment(smtp_server))
    start = threading.Barrier(2)
    reports = []

    def work(runner: RenewalNotices) -> None:
        start.wait()
        reports.append(runner.run(left(6)))

    threads = [threading.Thread(target=work, args=(runner,)) for runner in (job, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = sorted((o["id"], 7) for o in [order, *others])
    assert sorted(reports[0].sent + reports[1].sent) == expected
    assert len(inbox.messages) == 4
    subjects = sorted(message["Subject"] for _, _, message in inbox.messages)
    assert len(set(subjects)) == 4
    assert len(harness.outbox("orders.renewal.notice_sent")) == 4
    assert all(claim.sent_at is not None for claim in claims(harness))


def test_the_smtp_adapter_signs_in_when_given_credentials(harness, order, smtp_server, inbox):
    runner = RenewalNotices.from_environment(harness.service.uow, smtp_environment(
        smtp_server, CHANCERY_SMTP_USERNAME="chancery", CHANCERY_SMTP_PASSWORD="s3cret"))
    assert runner.run(left(29)).sent == [(order["id"], 30)]
    assert inbox.logins == [(b"chancery", b"s3cret")]


def test_an_unreachable_server_is_a_failure_not_a_crash(harness, order):
    closed = RenewalNotices.from_environment(harness.service.uow, {
        "CHANCERY_SMTP_HOST": "127.0.0.1", "CHANCERY_SMTP_PORT": str(free_port()),
        "CHANCERY_SMTP_FROM": SENDER, "CHANCERY_SMTP_TIMEOUT_SECONDS": "2"})
    report = closed.run(left(29))
    assert report.failed == [(order["id"], 30)] and report.sent == []
    assert harness.outbox("orders.renewal.notice_sent") == []


def test_the_smtp_mailer_reports_a_refused_message():
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=free_port(), sender=SENDER,
                                     timeout_seconds=2))
    with pytest.raises(MailNotSent):
        mailer.send(Mail(to=("a@example.com",), subject="s", body="b"))


# --- when notices are due (recording mailer: fast) -----------------------------------------


@pytest.fixture
def recording(harness):
    mailer = RecordingMailer()
    return RenewalNotices(harness.service.uow, mailer), mailer


def test_each_notice_day_is_sent_once_when_reached(harness, order, recording):
    runner, mailer = recording
    timeline = [(91, []), (89.5, [90]), (89, []), (60.5, []), (59.9, [60]), (29, [30]),
                (29, []), (6.5, [7]), (2.1, [3]), (0.5, [])]
    for days, expected in timeline:
        assert [d for _, d in runner.run(left(days)).sent] == expected, days
    assert [mail.subject.split(" expires in ")[1] for mail in mailer.sent] == [
        "90 days (2027-06-01)", "60 days (2027-06-01)", "29 days (2027-06-01)",
        "7 days (2027-06-01)", "3 days (2027-06-01)"]


def test_a_plans_notice_says_the_replacement_comes_by_itself(harness, rsa_key, recording):
    runner, mailer = recording
    harness.add_unit(UNIT_A, "Retail")
    harness.validate_domain("example.com")
    add_user(harness, "u-req", "rita@example.com")
    order = issued(harness, rsa_key, term_years=3)  # a one-year certificate of a 3-year plan

    assert runner.run(left(29)).sent == [(order["id"], 30)]
    body = mailer.sent[0].body
    assert "belongs to a plan that runs until 2029-06-01" in body
    assert "/renew " not in body and "/renew," not in body


def test_a_late_pass_sends_only_the_nearest_notice(harness, order, recording):
    runner, mailer = recording
    assert runner.run(left(5)).sent == [(order["id"], 7)]
    assert len(mailer.sent) == 1
    assert [c.days_before for c in claims(harness)] == [7]


def test_an_orders_override_changes_its_days_and_addresses(harness, order, recording):
    runner, mailer = recording
    put = harness.client.put(f"{ORDERS}/{order['id']}/renewal-notices",
                             json={"days_before": [10], "emails": ["owner@example.com"]},
                             headers=harness.headers("admin"))
    assert put.status_code == 200, put.json

    assert runner.run(left(29)).sent == []
    assert runner.run(left(9.5)).sent == [(order["id"], 10)]
    assert mailer.sent[0].to == ("rita@example.com", "sam@example.com", "owner@example.com")


def test_an_order_with_notices_turned_off_gets_none(harness, order, recording):
    runner, mailer = recording
    harness.client.put(f"{ORDERS}/{order['id']}/renewal-notices", json={"enabled": False},
                       headers=harness.headers("admin"))
    assert runner.run(left(29)).sent == [] and mailer.sent == []


def test_a_deactivated_requester_is_no_longer_told(harness, order, recording):
    runner, mailer = recording
    add_user(harness, "u-req", "rita@example.com", active=False)
    runner.run(left(29))
    assert mailer.sent[0].to == ("sam@example.com", "pki-team@example.com")


def test_with_nobody_to_tell_nothing_is_claimed_until_someone_is(harness, rsa_key, recording):
    runner, mailer = recording
    harness.add_unit(UNIT_A, "Retail")
    harness.validate_domain("example.com")
    order = issued(harness, rsa_key, requester="u-unknown")  # identity never told us

    report = runner.run(left(29))
    assert report.without_recipients == [(order["id"], 30)] and claims(harness) == []

    harness.client.put(ACCOUNT_NOTICES, json={"days_before": [30], "emails": ["ops@example.com"]},
                       headers=harness.headers("admin"))
    assert runner.run(left(29)).sent == [(order["id"], 30)]
    assert mailer.sent[0].to == ("ops@example.com",)


def test_a_failed_send_releases_the_claim_for_the_next_pass(harness, order):
    failing = RenewalNotices(harness.service.uow, RecordingMailer(fail=True))
    assert failing.run(left(29)).failed == [(order["id"], 30)]
    assert claims(harness) == [] and harness.outbox("orders.renewal.notice_sent") == []

    working = RenewalNotices(harness.service.uow, RecordingMailer())
    assert working.run(left(29)).sent == [(order["id"], 30)]


@pytest.mark.parametrize(("claimed_ago", "sent"), [(timedelta(minutes=1), False),
                                                   (timedelta(minutes=16), True)])
def test_an_abandoned_claim_is_taken_over_after_the_timeout(harness, order, recording,
                                                            claimed_ago, sent):
    runner, mailer = recording
    now = left(29)
    with harness.service.uow() as uow:
        serial = uow.session.get(Order, order["id"]).certificate.serial
        uow.session.add(RenewalNoticeSent(serial=serial, days_before=30, order_id=order["id"],
                                          claimed_at=now - claimed_ago, claimed_by="dead"))
        uow.commit()

    report = runner.run(now)

    assert (report.sent == [(order["id"], 30)]) is sent
    assert len(mailer.sent) == int(sent)
    [claim] = claims(harness)
    assert (claim.claimed_by != "dead") is sent
    assert (claim.sent_at is not None) is sent


@pytest.mark.parametrize("change", ["revoked", "expired", "certificate revoked"])
def test_no_notice_for_an_order_that_is_no_longer_live(harness, order, recording, change):
    runner, mailer = recording
    with harness.service.uow() as uow:
        stored = uow.session.get(Order, order["id"])
        if change == "certificate revoked":
            stored.certificate.status = "revoked"
        else:
            stored.status = change
        uow.commit()
    assert runner.run(left(29)).sent == [] and mailer.sent == []


PLAN = NoticePlan(enabled=True, days_before=(90, 30, 7), emails=())
START, END = at("2026-01-01T00:00:00Z"), at("2026-12-31T00:00:00Z")
DUE = [
    ("long before", PLAN, START, END, END - 100 * DAY, None),
    ("at the first day", PLAN, START, END, END - 90 * DAY, 90),
    ("between days", PLAN, START, END, END - 45 * DAY, 90),
    ("several passed: the nearest", PLAN, START, END, END - 6 * DAY, 7),
    ("expired", PLAN, START, END, END, None),
    ("turned off", NoticePlan(False, (90, 30, 7), ()), START, END, END - 6 * DAY, None),
    ("no days", NoticePlan(True, (), ()), START, END, END - 6 * DAY, None),
    ("90-day certificate at issuance: no 90-day notice", PLAN, END - 90 * DAY, END,
     END - 90 * DAY + timedelta(minutes=1), None),
    ("90-day certificate a month later: 30-day notice not yet", PLAN, END - 90 * DAY, END,
     END - 60 * DAY, None),
    ("90-day certificate at 30 days", PLAN, END - 90 * DAY, END, END - 30 * DAY, 30),
]


@pytest.mark.parametrize(("case", "plan", "not_before", "not_after", "now", "expected"), DUE,
                         ids=[case[0] for case in DUE])
def test_which_notice_is_due(case, plan, not_before, not_after, now, expected):
    assert due_notice(plan, not_before, not_after, now) == expected


# --- the background job ------------------------------------------------------------------------


def test_without_an_smtp_host_the_job_says_so_and_does_nothing(harness, order, caplog):
    runner = RenewalNotices.from_environment(harness.service.uow, {})
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="chancery_orders.notices"):
        runner.job(stop)  # returns at once, without waiting for stop
    assert "renewal notices are disabled: CHANCERY_SMTP_HOST is not set" in caplog.text
    assert runner.run(left(29)).sent == [] and claims(harness) == []


def test_the_job_runs_a_pass_then_waits_for_the_interval(harness, rsa_key):
    harness.add_unit(UNIT_A, "Retail")
    harness.validate_domain("example.com")
    add_user(harness, "u-req", "rita@example.com")
    now = datetime.now(UTC)
    order = issued(harness, rsa_key, not_before=now - 300 * DAY, not_after=now + 20 * DAY)
    mailer = RecordingMailer()
    runner = RenewalNotices(harness.service.uow, mailer, interval=timedelta(hours=1))
    stop = threading.Event()
    stop.set()  # one pass, then the wait returns at once

    runner.job(stop)

    assert [mail.to for mail in mailer.sent] == [("rita@example.com",)]
    assert order["id"] in mailer.sent[0].body


def test_the_service_runs_the_notice_job_in_the_background(harness):
    assert harness.service.renewal_notices.job in harness.service.background_jobs()


@pytest.mark.parametrize(("environ", "variable"), [
    ({"CHANCERY_SMTP_HOST": "mail.example.com"}, "CHANCERY_SMTP_FROM"),
    ({"CHANCERY_SMTP_PORT": "70000"}, "CHANCERY_SMTP_PORT"),
    ({"CHANCERY_SMTP_STARTTLS": "perhaps"}, "CHANCERY_SMTP_STARTTLS"),
    ({"CHANCERY_SMTP_USERNAME": "u"}, "CHANCERY_SMTP_USERNAME"),
    ({"CHANCERY_RENEWAL_CHECK_SECONDS": "0"}, "CHANCERY_RENEWAL_CHECK_SECONDS"),
    ({"CHANCERY_RENEWAL_CHECK_SECONDS": "hourly"}, "CHANCERY_RENEWAL_CHECK_SECONDS"),
])
def test_bad_settings_stop_the_start(harness, environ, variable):
    with pytest.raises(ConfigError) as refused:
        RenewalNotices.from_environment(harness.service.uow, environ)
    assert variable in refused.value.problems


def test_settings_are_read_from_the_environment(harness, smtp_server):
    runner = RenewalNotices.from_environment(harness.service.uow, smtp_environment(
        smtp_server, CHANCERY_RENEWAL_CHECK_SECONDS="120", CHANCERY_SMTP_STARTTLS="true"))
    assert runner.interval == timedelta(seconds=120)
    assert runner.mailer.settings.starttls is True
    assert runner.mailer.settings.port == smtp_server[0].port


# --- the settings over HTTP --------------------------------------------------------------------


def test_the_account_defaults_start_as_the_built_in_ones(harness):
    answer = harness.client.get(ACCOUNT_NOTICES, headers=harness.headers("admin"))
    assert answer.status_code == 200
    assert answer.json == {"days_before": [90, 60, 30, 7, 3], "emails": [],
                           "updated_at": None, "updated_by": None}


def test_an_admin_sets_the_account_defaults_and_it_is_recorded(harness):
    admin = harness.headers("admin", user_id="u-ada", name="Ada Admin")
    body = {"days_before": [7, 90, 30], "emails": [" PKI@Example.com "]}

    answer = harness.client.put(ACCOUNT_NOTICES, json=body, headers=admin)

    assert answer.status_code == 200, answer.json
    assert answer.json["days_before"] == [90, 30, 7]
    assert answer.json["emails"] == ["PKI@Example.com"]
    assert answer.json["updated_by"] == {"id": "u-ada", "name": "Ada Admin"}
    assert harness.client.get(ACCOUNT_NOTICES, headers=admin).json == answer.json
    [event] = harness.outbox("orders.renewal.settings_changed")
    assert event["data"] == {"scope": "account", "order_id": None, "days_before": [90, 30, 7],
                             "emails": ["PKI@Example.com"], "enabled": True}
    assert event["summary"] == ("Ada Admin set the account's renewal notices to 90, 30 and 7 "
                                "days before expiry; extra addresses PKI@Example.com")
    # the same again changes nothing and records nothing
    harness.client.put(ACCOUNT_NOTICES, json=body, headers=admin)
    assert len(harness.outbox("orders.renewal.settings_changed")) == 1
    # another account keeps its own defaults
    stranger = harness.headers("admin", account_id=OTHER_ACCOUNT)
    assert harness.client.get(ACCOUNT_NOTICES, headers=stranger).json["days_before"] == [
        90, 60, 30, 7, 3]


INVALID_SETTINGS = [
    ({"days_before": [0]}, "days_before"),
    ({"days_before": [366]}, "days_before"),
    ({"days_before": [30, 7, 30]}, "days_before"),
    ({"days_before": ["30"]}, "days_before"),
    ({"days_before": [1.5]}, "days_before"),
    ({"days_before": "30"}, "days_before"),
    ({"days_before": list(range(1, 14))}, "days_before"),
    ({"emails": []}, "days_before"),  # required on the account
    ({"days_before": [30], "emails": ["not-an-address"]}, "emails"),
    ({"days_before": [30], "emails": ["a@example.com", "A@example.com"]}, "emails"),
    ({"days_before": [30], "emails": ["a@example.com\r\nBcc: b@example.com"]}, "emails"),
    ({"days_before": [30], "emails": "a@example.com"}, "emails"),
    ({"days_before": [30], "emails": [f"u{n}@example.com" for n in range(21)]}, "emails"),
    ({"days_before": [30], "cc": ["a@example.com"]}, "cc"),
]


def named(errors: dict, field: str) -> bool:
    return any(key == field or key.startswith(field + ".") for key in errors)


@pytest.mark.parametrize(("body", "field"), INVALID_SETTINGS,
                         ids=[str(body)[:50] for body, _ in INVALID_SETTINGS])
def test_unacceptable_account_settings_are_refused_naming_the_field(shared_harness, body,
                                                                    field):
    harness = shared_harness
    answer = harness.client.put(ACCOUNT_NOTICES, json=body, headers=harness.headers("admin"))
    assert answer.status_code == 422
    assert named(answer.json["errors"], field), answer.json
    assert harness.outbox("orders.renewal.settings_changed") == []
    assert harness.client.get(ACCOUNT_NOTICES,
                              headers=harness.headers("admin")).json["updated_at"] is None


ACCOUNT_ROLES = [  # who -> status for GET and PUT /renewal-notices
    ({"role": "limited"}, 403), ({"role": "finance"}, 403),
    ({"role": "unit_admin", "units": (UNIT_A,)}, 403), ({"role": "admin"}, 200),
    ({"role": "admin", "account_id": OTHER_ACCOUNT}, 200),
    ({"role": "operator", "account_id": None}, 403), (None, 401),
]


@pytest.mark.parametrize(("who", "status"), ACCOUNT_ROLES,
                         ids=[str(w and list(w.values())) for w, _ in ACCOUNT_ROLES])
def test_only_admins_read_and_set_the_account_defaults(shared_harness, who, status):
    harness = shared_harness
    headers = {}
    if who is not None:
        who = dict(who)
        headers = harness.headers(who.pop("role"), **who)
    for method in ("get", "put"):
        answer = getattr(harness.client, method)(ACCOUNT_NOTICES, headers=headers,
                                                 json={"days_before": [30]})
        assert answer.status_code == status, (method, answer.json)
        if status == 403:
            assert answer.json["missing_permission"] == "renewal_settings"


@pytest.fixture
def unit_order(harness, rsa_key):
    """A limited user's order in unit A, pending approval."""
    harness.add_unit(UNIT_A, "Retail")
    return place(harness, rsa_key, role="limited", user_id="u-req", units=(UNIT_A,))


ORDER_ROLES = [
    ("limited requester", {"role": "limited", "user_id": "u-req"}, 403),
    ("other limited", {"role": "limited"}, 403),
    ("finance", {"role": "finance"}, 403),
    ("unit_admin of the order's unit", {"role": "unit_admin", "units": (UNIT_A,)}, 200),
    ("unit_admin of another unit", {"role": "unit_admin", "units": (UNIT_B,)}, 404),
    ("admin", {"role": "admin"}, 200),
    ("admin of another account", {"role": "admin", "account_id": OTHER_ACCOUNT}, 404),
    ("operator", {"role": "operator", "account_id": None}, 403),
    ("anonymous", None, 401),
]


@pytest.fixture(scope="module")
def shared_order(shared_harness, rsa_key):
    """A limited user's order in unit A, in the module's shared service."""
    shared_harness.add_unit(UNIT_A, "Retail")
    return place(shared_harness, rsa_key, role="limited", user_id="u-req", units=(UNIT_A,))


@pytest.mark.parametrize(("case", "who", "status"), ORDER_ROLES, ids=[c for c, _, _ in ORDER_ROLES])
def test_who_reads_and_sets_an_orders_notices(shared_harness, shared_order, case, who, status):
    harness = shared_harness
    headers = {}
    if who is not None:
        who = dict(who)
        headers = harness.headers(who.pop("role"), **who)
    url = f"{ORDERS}/{shared_order['id']}/renewal-notices"
    recorded = len(harness.outbox("orders.renewal.settings_changed"))
    for method, days in (("get", None), ("put", [len(case)]), ("put", None)):
        answer = getattr(harness.client, method)(url, headers=headers,
                                                 json={"days_before": days})
        assert answer.status_code == status, (method, answer.json)
        if status == 403:
            assert answer.json["missing_permission"] == "renewal_settings"
        if status == 200:
            assert answer.json["order_id"] == shared_order["id"]
    changes = len(harness.outbox("orders.renewal.settings_changed")) - recorded
    assert changes == (2 if status == 200 else 0)


def test_a_unit_admin_who_requested_for_another_unit_sees_but_cannot_set(harness, rsa_key):
    harness.add_unit(UNIT_B, "Research")
    order = place(harness, rsa_key, role="unit_admin", user_id="u-ua", units=(UNIT_A,),
                  unit_id=None)
    with harness.service.uow() as uow:  # an approver moved it to unit B
        uow.session.get(Order, order["id"]).unit_id = UNIT_B
        uow.commit()
    answer = harness.client.get(f"{ORDERS}/{order['id']}/renewal-notices",
                                headers=harness.headers("unit_admin", user_id="u-ua",
                                                        units=(UNIT_A,)))
    assert answer.status_code == 403


def test_an_orders_override_is_shown_beside_what_applies(harness, unit_order):
    admin = harness.headers("admin", name="Ada Admin")
    url = f"{ORDERS}/{unit_order['id']}/renewal-notices"
    harness.client.put(ACCOUNT_NOTICES, json={"days_before": [30, 7], "emails": ["a@x.example"]},
                       headers=admin)

    assert harness.client.get(url, headers=admin).json == {
        "order_id": unit_order["id"], "enabled": True, "days_before": [30, 7],
        "emails": ["a@x.example"],
        "overrides": {"days_before": None, "emails": None, "enabled": None}}

    answer = harness.client.put(url, json={"days_before": [3, 14]}, headers=admin)
    assert answer.json == {
        "order_id": unit_order["id"], "enabled": True, "days_before": [14, 3],
        "emails": ["a@x.example"],
        "overrides": {"days_before": [14, 3], "emails": None, "enabled": True}}
    [_, event] = harness.outbox("orders.renewal.settings_changed")
    assert event["data"] == {"scope": "order", "order_id": unit_order["id"],
                             "days_before": [14, 3], "emails": None, "enabled": True}
    assert event["correlation_id"] == unit_order["id"]
    assert event["summary"].startswith("Ada Admin set the renewal notices of order ")

    off = harness.client.put(url, json={"enabled": False, "emails": []}, headers=admin).json
    assert (off["enabled"], off["days_before"], off["emails"]) == (False, [30, 7], [])
    reset = harness.client.put(url, json={}, headers=admin).json
    assert (reset["enabled"], reset["days_before"], reset["emails"]) == (True, [30, 7],
                                                                         ["a@x.example"])


@pytest.mark.parametrize(("body", "field"), [
    ({"days_before": [0]}, "days_before"), ({"days_before": [400, 400]}, "days_before"),
    ({"emails": ["nope"]}, "emails"), ({"enabled": "maybe"}, "enabled"),
    ({"days_before": [1], "emails": ["x"]}, "emails"),
])
def test_unacceptable_order_settings_are_refused_naming_the_field(shared_harness, rsa_key,
                                                                  body, field):
    harness = shared_harness
    order = place(harness, rsa_key, role="limited")
    url = f"{ORDERS}/{order['id']}/renewal-notices"
    answer = harness.client.put(url, json=body, headers=harness.headers("admin"))
    assert answer.status_code == 422
    assert named(answer.json["errors"], field), answer.json
    assert harness.client.get(url, headers=harness.headers("admin")).json["overrides"] == {
        "days_before": None, "emails": None, "enabled": None}
