"""Which validations count for which products: a manual review only for private ones,
with its evidence required and kept; the BR methods for every product."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import REVIEW, csr_pem
from .lifecycle_support import call, issued_order

DOMAINS = "/api/orders/v1/domains"
ORDERS = "/api/orders/v1/orders"


KEY = ec.generate_private_key(ec.SECP256R1())


def place(harness, order_body, product, common_name="www.example.com"):
    answer = harness.client.post(ORDERS, json=order_body(product=product,
                                                         common_name=common_name,
                                                         csr=csr_pem(KEY, common_name)),
                                 headers=harness.headers("admin"))
    assert answer.status_code == 201, answer.json
    return answer.json


@pytest.mark.parametrize(("product", "name"), [("ssl_dv", "www.example.com"),
                                               ("ssl_wildcard_dv", "*.example.com")])
def test_manual_validation_refused_for_a_public_product(harness, order_body, product, name):
    harness.validate_domain("example.com", method="manual")

    order = place(harness, order_body, product, name)

    assert order["status"] == "pending_approval"  # an admin's order, yet not approved
    waiting = order["history"][-1]
    assert waiting["action"] == "approval_waiting"
    assert "manual review, which does not count for the public product" in \
        waiting["details"]["reason"]
    refused = harness.client.post(f"{ORDERS}/{order['id']}/approve", json={},
                                  headers=harness.headers("admin"))
    assert refused.status_code == 422
    assert refused.content_type == "application/problem+json"
    assert refused.json["code"] == "domain_not_validated"
    assert refused.json["names"] == [name]
    assert refused.json["domains"] == ["example.com"]
    assert refused.json["submit_domain_url"] == DOMAINS
    assert (f"{name} is validated by manual review, which does not count for the public "
            f"product {product}: validate by dns-txt or http-file") in refused.json["detail"]
    assert harness.outbox("orders.order.approved") == []


def test_manual_validation_covers_a_private_product_with_its_subdomains(harness, order_body):
    harness.validate_domain("example.com", method="manual")
    order = place(harness, order_body, "private_tls", "www.example.com")
    assert order["status"] == "approved"


def test_a_br_method_covers_public_and_private_products(harness, order_body):
    harness.validate_domain("example.com")  # dns-txt
    assert place(harness, order_body, "ssl_wildcard_dv", "*.example.com")["status"] == \
        "approved"
    assert place(harness, order_body, "private_tls", "www.example.com")["status"] == \
        "approved"


def test_a_domain_nobody_validated_says_nothing_of_manual_review(harness, order_body):
    order = place(harness, order_body, "ssl_dv")
    refused = harness.client.post(f"{ORDERS}/{order['id']}/approve", json={},
                                  headers=harness.headers("admin"))
    assert refused.json["code"] == "domain_not_validated"
    assert "manual review" not in refused.json["detail"]


def test_an_edit_to_a_public_product_loses_the_manual_coverage(harness, order_body):
    harness.validate_domain("example.com", method="manual")
    order = harness.client.post(ORDERS, json=order_body(product="private_tls"),
                                headers=harness.headers("limited")).json
    assert order["status"] == "pending_approval"
    edited = harness.client.patch(f"{ORDERS}/{order['id']}", json={"product": "ssl_dv"},
                                  headers=harness.headers("admin"))
    assert edited.status_code == 200, edited.json

    refused = harness.client.post(f"{ORDERS}/{order['id']}/approve", json={},
                                  headers=harness.headers("admin"))

    assert refused.status_code == 422
    assert "does not count for the public product ssl_dv" in refused.json["detail"]


def test_a_reissue_of_a_public_order_refuses_names_only_a_review_covers(harness, csr,
                                                                        self_signed):
    order = issued_order(harness, csr, self_signed)
    harness.validate_domain("other.org", method="manual")

    refused = call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin",
                   {"csr": csr, "sans": ["www.example.com", "www.other.org"]})

    assert refused.status_code == 422
    assert refused.json["code"] == "domain_not_validated"
    assert refused.json["names"] == ["www.other.org"]
    assert "does not count for the public product ssl_dv" in refused.json["detail"]


# --- the evidence of a manual review -------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({}, "checked"),
    ({"reference": "T-1"}, "checked"),
    ({"checked": " \n ", "reference": "T-1"}, "checked"),
    ({"checked": "x" * 2001, "reference": "T-1"}, "checked"),
    ({"checked": "WHOIS registrant matches"}, "reference"),
    ({"checked": "WHOIS registrant matches", "reference": "   "}, "reference"),
    ({**REVIEW, "document_sha256": "not-a-digest"}, "document_sha256"),
    ({"note": "checked by phone"}, "note"),  # the old free-text body is refused
])
def test_manual_approval_without_its_evidence_is_refused_naming_the_field(harness, body,
                                                                          field):
    domain = harness.client.post(DOMAINS, json={"name": "example.com", "method": "dns-txt"},
                                 headers=harness.headers("admin")).json
    answer = harness.client.post(f"{DOMAINS}/{domain['id']}/approve", json=body,
                                 headers=harness.headers("operator", account_id=None))

    assert answer.status_code == 422
    assert answer.content_type == "application/problem+json"
    assert field in answer.json["errors"]
    shown = harness.client.get(f"{DOMAINS}/{domain['id']}", headers=harness.headers("admin"))
    assert shown.json["status"] == "pending"
    assert harness.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                              headers=harness.headers("admin")).json["items"] == []
    assert harness.outbox("orders.domain.validated") == []


def test_the_review_is_kept_as_an_attempt_with_who_when_what_and_where(harness):
    domain = harness.client.post(DOMAINS, json={"name": "example.com", "method": "dns-txt"},
                                 headers=harness.headers("admin")).json
    digest = "0123456789ABCDEF" * 4
    approved = harness.client.post(
        f"{DOMAINS}/{domain['id']}/approve", json={**REVIEW, "document_sha256": digest},
        headers=harness.headers("operator", account_id=None, user_id="user-olga",
                                name="Olga Operator")).json

    [attempt] = harness.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                                   headers=harness.headers("admin")).json["items"]

    assert attempt["method"] == "manual"
    assert attempt["trigger"] == "manual_review"
    assert attempt["validated"] is True
    assert attempt["checked"] == REVIEW["checked"]
    assert attempt["reference"] == REVIEW["reference"]
    assert attempt["document_sha256"] == digest.lower()
    assert attempt["requested_by"] == {"id": "user-olga", "name": "Olga Operator"}
    assert attempt["attempted_at"] == approved["validated_at"]
    assert "private products only" in attempt["outcome"]
    assert attempt["migrated"] is False
    assert attempt["token"] == ""  # no token was used


def test_a_second_review_of_a_validated_domain_conflicts(harness):
    domain = harness.validate_domain("example.com", method="manual")
    again = harness.client.post(f"{DOMAINS}/{domain['id']}/approve", json=REVIEW,
                                headers=harness.headers("operator", account_id=None))
    assert again.status_code == 409
    assert again.json["code"] == "invalid_domain_state"
    attempts = harness.client.get(f"{DOMAINS}/{domain['id']}/attempts",
                                  headers=harness.headers("admin")).json["items"]
    assert len(attempts) == 1
