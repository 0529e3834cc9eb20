"""Organizations for OV/EV: submission, validation by the operator, and their use in orders."""

from __future__ import annotations

import pytest

from .conftest import ACCOUNT, OTHER_ACCOUNT
from .test_saga import SIGN, reserve

ORGS = "/api/orders/v1/organizations"
ORDERS = "/api/orders/v1/orders"
ACME = {"name": "Acme Widgets Inc.", "country": "de", "state_or_province": "Bavaria",
        "locality": "Munich", "street_address": "Marienplatz 1", "postal_code": "80331"}
REGISTRY = {"source": "government_agency",
            "checked": "Handelsregister (Amtsgericht München HRB 123456): name, seat and "
                       "address match, status active",
            "reference": "https://tickets.example.net/OV-42"}


def test_an_organization_is_submitted_pending_and_validated_by_the_operator(harness):
    submitted = harness.client.post(ORGS, json=ACME, headers=harness.headers("unit_admin"))
    assert submitted.status_code == 201, submitted.json
    org = submitted.json
    assert (org["status"], org["country"], org["validated_until"]) == ("pending", "DE", None)
    assert harness.outbox("orders.organization.submitted")[0]["data"]["organization_id"] \
        == org["id"]

    pending = harness.client.get(f"{ORGS}?status=pending",
                                 headers=harness.headers("operator", account_id=None)).json
    assert [o["id"] for o in pending["items"]] == [org["id"]]
    digest = "AB" * 32
    approved = harness.client.post(f"{ORGS}/{org['id']}/approve",
                                   json={**REGISTRY, "document_sha256": digest},
                                   headers=harness.headers("operator", account_id=None,
                                                           user_id="user-olga",
                                                           name="Olga Operator"))
    assert approved.status_code == 200, approved.json
    assert approved.json["status"] == "validated"
    assert approved.json["validated_by"]["name"] == "Olga Operator"
    assert approved.json["validated_until"] is not None
    [event] = harness.outbox("orders.organization.validated")
    assert event["data"]["note"] == REGISTRY["checked"]
    assert event["data"]["source"] == "government_agency"
    assert event["data"]["reference"] == REGISTRY["reference"]
    assert "Olga Operator validated the organization Acme Widgets Inc." in event["summary"]
    again = harness.client.post(f"{ORGS}/{org['id']}/approve", json=REGISTRY,
                                headers=harness.headers("operator", account_id=None))
    assert again.status_code == 409

    # the evidence: who, when, which source, what was checked, where the proof is
    [attempt] = harness.client.get(f"{ORGS}/{org['id']}/attempts",
                                   headers=harness.headers("admin")).json["items"]
    assert attempt["source"] == "government_agency"
    assert attempt["checked"] == REGISTRY["checked"]
    assert attempt["reference"] == REGISTRY["reference"]
    assert attempt["document_sha256"] == digest.lower()
    assert attempt["checked_by"] == {"id": "user-olga", "name": "Olga Operator"}
    assert attempt["checked_at"] == approved.json["validated_at"]
    assert attempt["validated_until"] == approved.json["validated_until"]
    assert attempt["migrated"] is False


@pytest.mark.parametrize(("body", "field"), [
    ({"source": "government_agency", "reference": "T-1"}, "checked"),
    ({**REGISTRY, "checked": "   "}, "checked"),
    ({**REGISTRY, "reference": ""}, "reference"),
    ({"source": "government_agency", "checked": "registry"}, "reference"),
    ({"checked": "registry", "reference": "T-1"}, "source"),
    ({**REGISTRY, "source": "phone_call"}, "source"),
    ({**REGISTRY, "document_sha256": "abc"}, "document_sha256"),
    ({"note": "checked the registry"}, "checked"),  # the old free-text body
])
def test_an_organization_validation_without_its_evidence_is_refused_naming_the_field(
        harness, body, field):
    org = harness.organization(validate=False)
    answer = harness.client.post(f"{ORGS}/{org['id']}/approve", json=body,
                                 headers=harness.headers("operator", account_id=None))
    assert answer.status_code == 422
    assert answer.content_type == "application/problem+json"
    assert field in answer.json["errors"]
    shown = harness.client.get(f"{ORGS}/{org['id']}", headers=harness.headers("admin")).json
    assert shown["status"] == "pending"
    assert harness.client.get(f"{ORGS}/{org['id']}/attempts",
                              headers=harness.headers("admin")).json["items"] == []
    assert harness.outbox("orders.organization.validated") == []


def test_another_accounts_organization_evidence_is_not_found(harness):
    org = harness.organization()
    other = harness.headers("admin", account_id=OTHER_ACCOUNT)
    assert harness.client.get(f"{ORGS}/{org['id']}/attempts", headers=other).status_code == 404
    limited = harness.client.get(f"{ORGS}/{org['id']}/attempts",
                                 headers=harness.headers("limited"))
    assert limited.status_code == 403


@pytest.mark.parametrize(("change", "field"), [
    ({"country": "XX"}, "country"),
    ({"country": "DEU"}, "country"),
    ({"name": "   "}, "name"),
    ({"locality": None}, "locality"),
    ({"name": "N" * 65}, "name"),
])
def test_a_bad_organization_is_refused_naming_the_field(harness, change, field):
    answer = harness.client.post(ORGS, json={**ACME, **change},
                                 headers=harness.headers("admin"))
    assert answer.status_code == 422
    assert field in str(answer.json)
    assert harness.outbox("orders.organization.submitted") == []


@pytest.mark.parametrize(("role", "method", "status"), [
    ("limited", "post", 403), ("finance", "post", 403), ("operator", "post", 403),
    ("limited", "get", 403), ("admin", "approve", 403), ("unit_admin", "approve", 403),
])
def test_roles_that_may_never_act_get_403_naming_the_permission(harness, role, method, status):
    org = harness.organization(validate=False)
    headers = harness.headers(role, account_id=None if role == "operator" else ACCOUNT)
    if method == "post":
        answer = harness.client.post(ORGS, json=ACME, headers=headers)
    elif method == "get":
        answer = harness.client.get(f"{ORGS}/{org['id']}", headers=headers)
    else:
        answer = harness.client.post(f"{ORGS}/{org['id']}/approve", json=REGISTRY,
                                     headers=headers)
    assert answer.status_code == status
    assert answer.json["missing_permission"].endswith("_organizations")


def test_another_accounts_organization_is_not_found(harness):
    org = harness.organization(validate=False)
    other = harness.headers("admin", account_id=OTHER_ACCOUNT)
    assert harness.client.get(f"{ORGS}/{org['id']}", headers=other).status_code == 404
    assert harness.client.get(ORGS, headers=other).json["items"] == []


def _order(harness, order_body, **fields):
    return harness.client.post(ORDERS, json=order_body(product="ssl_ov", **fields),
                               headers=harness.headers("admin", user_id="u-admin"))


def test_ov_orders_need_an_organization_of_the_account(harness, order_body):
    harness.validate_domain("example.com")
    foreign = harness.organization(OTHER_ACCOUNT)
    for fields, why in [({}, "is required"),
                        ({"organization_id": "no-such-org"}, "not an organization"),
                        ({"organization_id": foreign["id"]}, "not an organization")]:
        answer = _order(harness, order_body, **fields)
        assert answer.status_code == 422, answer.json
        assert why in " ".join(answer.json["errors"]["organization_id"])
    assert harness.outbox("orders.order.submitted") == []


def test_dv_orders_never_carry_an_organization(harness, order_body):
    org = harness.organization()
    answer = harness.client.post(ORDERS, json=order_body(organization_id=org["id"]),
                                 headers=harness.headers("admin"))
    assert answer.status_code == 422
    assert "carry no organization" in answer.json["errors"]["organization_id"][0]


def test_approval_waits_for_the_organization_to_be_validated(harness, order_body):
    harness.validate_domain("example.com")
    org = harness.organization(validate=False)
    order = _order(harness, order_body, organization_id=org["id"]).json
    assert order["status"] == "pending_approval"
    assert order["history"][-1]["action"] == "approval_waiting"

    refused = harness.client.post(f"{ORDERS}/{order['id']}/approve", json={},
                                  headers=harness.headers("admin"))
    assert refused.status_code == 422
    assert refused.json["code"] == "organization_not_validated"
    assert harness.outbox("orders.order.approved") == []


def test_the_sign_command_names_the_organization_in_the_subject(harness, order_body):
    harness.validate_domain("example.com")
    org = harness.client.post(ORGS, json=ACME, headers=harness.headers("admin")).json
    harness.client.post(f"{ORGS}/{org['id']}/approve", json=REGISTRY,
                        headers=harness.headers("operator", account_id=None))
    order = _order(harness, order_body, organization_id=org["id"]).json
    assert (order["status"], order["organization_id"]) == ("approved", org["id"])

    reserve(harness, order)

    [command] = harness.outbox(SIGN)
    assert command["data"]["profile"] == "ov"
    assert command["data"]["subject"] == {
        "common_name": "www.example.com", "organization_name": "Acme Widgets Inc.",
        "country": "DE", "state_or_province": "Bavaria", "locality": "Munich"}


def test_a_dv_sign_command_has_only_the_common_name(harness, order_body):
    harness.validate_domain("example.com")
    order = harness.client.post(ORDERS, json=order_body(),
                                headers=harness.headers("admin")).json
    reserve(harness, order)
    [command] = harness.outbox(SIGN)
    assert command["data"]["subject"] == {"common_name": "www.example.com"}
