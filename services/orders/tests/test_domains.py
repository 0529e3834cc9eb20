"""Domains: submission by account administrators, manual validation by the operator."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from chancery_orders.compliance import reusable_until
from chancery_orders.model import Domain
from chancery_shared.messaging.envelope import utcnow
from sqlalchemy import update

from .conftest import ACCOUNT, OTHER_ACCOUNT, REVIEW

DOMAINS = "/api/orders/v1/domains"


def submit(harness, name, method="dns-txt", account_id=ACCOUNT, role="admin"):
    return harness.client.post(DOMAINS, json={"name": name, "method": method},
                               headers=harness.headers(role, account_id=account_id))


def test_an_admin_submits_a_domain_and_learns_which_txt_record_to_publish(harness):
    answer = submit(harness, "Example.COM.")

    assert answer.status_code == 201
    domain = answer.json
    assert domain["name"] == "example.com"
    assert domain["status"] == "pending"
    assert domain["method"] == "dns-txt"
    assert domain["validated_until"] is None
    assert len(domain["token"]) >= 32  # 24 random bytes, >= 128 bits
    assert domain["instructions"]["record_name"] == "_chancery-challenge.example.com"
    assert domain["instructions"]["record_value"] == domain["token"]
    [event] = harness.outbox("orders.domain.submitted")
    assert event["account_id"] == ACCOUNT
    assert event["data"] == {"domain_id": domain["id"], "name": "example.com",
                             "method": "dns-txt", "validated_until": None}
    assert "submitted the domain example.com" in event["summary"]


def test_the_http_file_method_names_the_url_and_its_content(harness):
    domain = submit(harness, "bücher.de", method="http-file", role="unit_admin").json

    assert domain["name"] == "xn--bcher-kva.de"
    assert domain["instructions"]["url"].startswith(
        "http://xn--bcher-kva.de/.well-known/pki-validation/")
    assert domain["instructions"]["content"] == domain["token"]


def test_each_submission_gets_its_own_token(harness):
    first = submit(harness, "one.example.com").json["token"]
    second = submit(harness, "two.example.com").json["token"]
    assert first != second


@pytest.mark.parametrize("name", ["192.0.2.1", "intranet", "localhost", "printer.local",
                                  "app.test", "www.example", "x.invalid", "db.internal",
                                  "*.example.com", "co.uk", "bad_name.example.com"])
def test_names_that_cannot_be_public_domains_are_refused_naming_the_field(shared_harness,
                                                                          name):
    answer = submit(shared_harness, name)
    assert answer.status_code == 422
    assert "name" in answer.json["errors"]
    assert shared_harness.outbox() == []


def test_an_unknown_method_is_refused(harness):
    answer = submit(harness, "example.com", method="email")
    assert answer.status_code == 422
    assert "method" in answer.json["errors"]


def test_the_same_domain_twice_in_one_account_conflicts_but_another_account_may_have_it(
        harness):
    assert submit(harness, "example.com").status_code == 201
    again = submit(harness, "EXAMPLE.com")
    assert again.status_code == 409
    assert submit(harness, "example.com", account_id=OTHER_ACCOUNT).status_code == 201


@pytest.mark.parametrize("role", ["limited", "finance", "operator"])
def test_only_administrators_submit_domains(shared_harness, role):
    answer = submit(shared_harness, "example.com", role=role,
                    account_id=None if role == "operator" else ACCOUNT)
    assert answer.status_code == 403
    assert answer.json["missing_permission"] == "manage_domains"
    assert shared_harness.outbox() == []


def test_another_accounts_domain_is_not_found(harness):
    domain = submit(harness, "example.com").json
    other = harness.headers("admin", account_id=OTHER_ACCOUNT)
    assert harness.client.get(f"{DOMAINS}/{domain['id']}", headers=other).status_code == 404
    assert harness.client.get(DOMAINS, headers=other).json["items"] == []
    mine = harness.client.get(f"{DOMAINS}/{domain['id']}", headers=harness.headers("admin"))
    assert mine.status_code == 200
    assert mine.json["name"] == "example.com"


def test_the_operator_validates_a_domain_for_private_products_for_the_reuse_period(harness):
    domain = submit(harness, "example.com").json
    operator = harness.headers("operator", account_id=None, name="Olga Operator")

    before = utcnow()
    answer = harness.client.post(f"{DOMAINS}/{domain['id']}/approve",
                                 json={"checked": "  called the registrant  ",
                                       "reference": "ticket T-77"}, headers=operator)

    assert answer.status_code == 200
    assert answer.json["status"] == "validated"
    until = datetime.fromisoformat(answer.json["validated_until"])
    # reusable while a certificate signed then may rest on it (BR 4.2.1 at signing)
    assert reusable_until(before) <= until <= reusable_until(utcnow())
    assert answer.json["validated_by"]["name"] == "Olga Operator"
    assert answer.json["validation_note"] == "called the registrant"
    assert answer.json["validated_with"] == "manual"
    assert answer.json["coverage"] == {
        "method": "manual", "title": "Operator review (not a BR 3.2.2.4 method)",
        "br_section": None, "subdomains": True, "wildcards": True, "public": False}
    [event] = harness.outbox("orders.domain.validated")
    assert event["account_id"] == ACCOUNT  # the customer's, not the operator's (none)
    assert event["actor"]["user_name"] == "Olga Operator"
    assert event["data"]["validated_until"] == answer.json["validated_until"]
    assert event["data"]["reference"] == "ticket T-77"
    assert event["summary"].startswith("Olga Operator validated the domain example.com by "
                                       "manual review for private products only")


@pytest.mark.parametrize("role", ["admin", "unit_admin", "limited"])
def test_account_users_cannot_validate_their_own_domains(harness, role):
    domain = submit(harness, "example.com").json
    answer = harness.client.post(f"{DOMAINS}/{domain['id']}/approve", json=REVIEW,
                                 headers=harness.headers(role))
    assert answer.status_code == 403
    assert answer.json["missing_permission"] == "validate_domains"
    assert harness.outbox("orders.domain.validated") == []


def test_validating_an_unknown_domain_is_not_found(harness):
    answer = harness.client.post(f"{DOMAINS}/no-such-id/approve", json=REVIEW,
                                 headers=harness.headers("operator", account_id=None))
    assert answer.status_code == 404


def test_the_operator_finds_pending_domains_of_every_account(harness):
    submit(harness, "example.com")
    submit(harness, "shop.example.net", account_id=OTHER_ACCOUNT)
    validated = submit(harness, "done.example.org").json
    operator = harness.headers("operator", account_id=None)
    harness.client.post(f"{DOMAINS}/{validated['id']}/approve", json=REVIEW, headers=operator)

    pending = harness.client.get(f"{DOMAINS}?status=pending", headers=operator).json["items"]
    assert sorted((d["name"], d["account_id"]) for d in pending) == [
        ("example.com", ACCOUNT), ("shop.example.net", OTHER_ACCOUNT)]
    by_name = harness.client.get(f"{DOMAINS}?name=example.net", headers=operator).json
    assert [d["name"] for d in by_name["items"]] == ["shop.example.net"]
    done = harness.client.get(f"{DOMAINS}?status=validated", headers=operator).json["items"]
    assert [d["name"] for d in done] == ["done.example.org"]


def test_a_validation_past_its_reuse_period_shows_as_expired(harness):
    domain = harness.validate_domain("example.com")
    with harness.service.session_factory.begin() as session:
        session.execute(update(Domain).values(validated_until=utcnow() - timedelta(seconds=1)))

    admin = harness.headers("admin")
    shown = harness.client.get(f"{DOMAINS}/{domain['id']}", headers=admin).json
    assert shown["status"] == "expired"
    expired = harness.client.get(f"{DOMAINS}?status=expired", headers=admin).json["items"]
    assert [d["id"] for d in expired] == [domain["id"]]
    assert harness.client.get(f"{DOMAINS}?status=validated", headers=admin).json["items"] == []


def test_domains_are_listed_newest_first_page_by_page(harness):
    for number in range(5):
        submit(harness, f"d{number}.example.com")
    admin = harness.headers("admin")

    first = harness.client.get(f"{DOMAINS}?limit=2", headers=admin).json
    second = harness.client.get(f"{DOMAINS}?limit=2&cursor={first['next_cursor']}",
                                headers=admin).json
    third = harness.client.get(f"{DOMAINS}?limit=2&cursor={second['next_cursor']}",
                               headers=admin).json

    seen = [d["name"] for page in (first, second, third) for d in page["items"]]
    assert seen == [f"d{n}.example.com" for n in (4, 3, 2, 1, 0)]
    assert third["next_cursor"] is None
    bad = harness.client.get(f"{DOMAINS}?cursor=garbage", headers=admin)
    assert bad.status_code == 422
    assert "cursor" in bad.json["errors"]
