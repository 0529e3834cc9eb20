"""Orders over HTTP: validation, self-approval, approval rules, visibility, cancellation."""

from __future__ import annotations

import base64
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .conftest import ACCOUNT, OTHER_ACCOUNT, UNIT_A, UNIT_B, csr_pem

ORDERS = "/api/orders/v1/orders"


def place(harness, body, role="limited", **who):
    return harness.client.post(ORDERS, json=body, headers=harness.headers(role, **who))


def tampered(csr: str) -> str:
    """The same CSR with one bit of its signature flipped."""
    der = bytearray(x509.load_pem_x509_csr(csr.encode()).public_bytes(
        serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.fixture(scope="module")
def weak_csrs() -> dict[str, str]:
    return {"rsa1024": csr_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
            "ed25519": csr_pem(ed25519.Ed25519PrivateKey.generate()),
            "secp256k1": csr_pem(ec.generate_private_key(ec.SECP256K1()))}


# --- validation --------------------------------------------------------------------------

INVALID_ORDERS = [
    ("not a CSR", {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END "
                          "CERTIFICATE REQUEST-----"}, "csr", "not a PEM"),
    ("tampered CSR signature", {"csr": "TAMPERED"}, "csr", "does not verify"),
    ("RSA 1024 key", {"csr": "rsa1024"}, "csr", "1024 bits"),
    ("Ed25519 key", {"csr": "ed25519"}, "csr", "Ed25519"),
    ("secp256k1 curve", {"csr": "secp256k1"}, "csr", "secp256k1"),
    ("IP address", {"sans": ["192.0.2.7"]}, "sans", "IP address"),
    (".local name", {"common_name": "nas.local"}, "common_name", "reserved or internal"),
    ("single label", {"common_name": "intranet"}, "common_name", "single-label"),
    ("wildcard on a non-wildcard product", {"common_name": "*.example.com"}, "common_name",
     "does not allow"),
    ("wildcard SAN on a non-wildcard product", {"sans": ["*.example.com"]}, "sans",
     "does not allow"),
    ("too many names", {"sans": ["a.example.com", "b.example.com"]}, "sans", "exceed the 2"),
    ("unknown product", {"product": "ssl_platinum"}, "product", "not a product"),
    ("term of 4 years", {"term_years": 4}, "term_years", ""),
    ("term of 0 years", {"term_years": 0}, "term_years", ""),
    ("unknown server type", {"server_type": "commodore64"}, "server_type", ""),
    ("common name over 64 characters",
     {"common_name": "a" * 60 + ".example.com"}, "common_name", "longer than 64"),
    ("unknown unit", {"unit_id": "no-such-unit"}, "unit_id", "not a business unit"),
    ("missing CSR", {"csr": None}, "csr", ""),
]


@pytest.mark.parametrize(("case", "change", "field", "message"), INVALID_ORDERS,
                         ids=[case[0] for case in INVALID_ORDERS])
def test_an_unacceptable_order_is_refused_naming_the_field(shared_harness, order_body,
                                                         weak_csrs, csr, case, change, field,
                                                         message):
    harness = shared_harness
    body = order_body(**change)
    if body["csr"] == "TAMPERED":
        body["csr"] = tampered(csr)
    elif body["csr"] in weak_csrs:
        body["csr"] = weak_csrs[body["csr"]]
    elif body["csr"] is None:
        del body["csr"]

    answer = place(harness, body)

    assert answer.status_code == 422, answer.json
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert field in answer.json["errors"], answer.json
    assert message in " ".join(answer.json["errors"][field])
    assert harness.outbox() == []  # nothing half-written
    listed = harness.client.get(ORDERS, headers=harness.headers("admin")).json["items"]
    assert listed == []


def test_every_bad_field_is_named_at_once(harness, order_body):
    answer = place(harness, order_body(product="nope", common_name="10.1.1.1",
                                       sans=["x.local"], csr="garbage"))
    assert answer.status_code == 422
    assert set(answer.json["errors"]) == {"product", "common_name", "sans", "csr"}


def test_a_good_ecdsa_csr_is_accepted(harness, order_body, ec_key):
    answer = place(harness, order_body(csr=csr_pem(ec_key)))
    assert answer.status_code == 201
    assert answer.json["key_type"] == "ECDSA P-256"


def test_names_are_normalised_deduplicated_and_always_include_the_common_name(
        harness, order_body):
    body = order_body(product="ssl_multi_domain_ov", common_name="WWW.Example.com.",
                      sans=["shop.example.com", "www.example.com", "SHOP.example.com",
                            "bücher.de", "a.example.com", "b.example.com"],
                      organization_id=harness.organization()["id"])
    answer = place(harness, body)

    assert answer.status_code == 201
    order = answer.json
    assert order["common_name"] == "www.example.com"
    assert order["sans"] == ["www.example.com", "shop.example.com", "xn--bcher-kva.de",
                             "a.example.com", "b.example.com"]
    # 4 names are in the price; the fifth costs the per-name price for the term.
    assert order["price_cents"] == 39900 + 4900


def test_the_price_comes_from_the_catalog_for_the_term(harness, order_body):
    answer = place(harness, order_body(product="ssl_ov", term_years=3,
                                       organization_id=harness.organization()["id"]))
    assert answer.json["price_cents"] == 53900


def test_a_wildcard_product_accepts_a_wildcard(harness, order_body, ec_key):
    answer = place(harness, order_body(product="ssl_wildcard_dv", common_name="*.example.com",
                                       sans=["example.com"],
                                       csr=csr_pem(ec_key, "*.example.com")))
    assert answer.status_code == 201
    assert answer.json["sans"] == ["*.example.com", "example.com"]


# --- submission and self-approval ------------------------------------------------------


def test_a_limited_users_order_waits_for_approval(harness, order_body):
    harness.validate_domain("example.com")
    answer = place(harness, order_body(notes="for the shop"), user_id="u-lim",
                   name="Lee Limited")

    assert answer.status_code == 201
    order = answer.json
    assert order["status"] == "pending_approval"
    assert order["requester"] == {"id": "u-lim", "name": "Lee Limited"}
    assert order["notes"] == "for the shop"
    assert order["certificate"] is None
    assert [h["action"] for h in order["history"]] == ["submitted"]
    [submitted] = harness.outbox("orders.order.submitted")
    assert submitted["correlation_id"] == order["id"]
    assert submitted["data"]["order_id"] == order["id"]
    assert submitted["data"]["sans"] == ["www.example.com"]
    assert submitted["data"]["price_cents"] == 4900
    assert submitted["summary"].startswith("Lee Limited requested order")
    assert harness.outbox("orders.order.approved") == []


def test_an_admins_order_for_a_validated_domain_is_approved_at_once(harness, order_body):
    harness.validate_domain("example.com")
    answer = place(harness, order_body(), role="admin", name="Ada Admin")

    assert answer.status_code == 201
    order = answer.json
    assert order["status"] == "approved"
    assert [h["action"] for h in order["history"]] == ["submitted", "approved"]
    assert order["history"][1]["details"]["automatic"] is True
    [approved] = harness.outbox("orders.order.approved")
    assert approved["correlation_id"] == order["id"]
    assert approved["account_id"] == ACCOUNT
    assert approved["data"] == {"order_id": order["id"], "price_cents": 4900, "unit_id": None,
                                "product": "ssl_dv"}
    assert "Ada Admin automatically approved" in approved["summary"]


def test_an_admins_order_for_an_unvalidated_domain_waits_and_says_why(harness, order_body):
    answer = place(harness, order_body(), role="admin")

    order = answer.json
    assert order["status"] == "pending_approval"
    assert order["history"][-1]["action"] == "approval_waiting"
    assert order["history"][-1]["details"]["domains"] == ["example.com"]
    assert harness.outbox("orders.order.approved") == []


def test_a_unit_admin_self_approves_only_orders_of_their_own_units(harness, order_body):
    harness.validate_domain("example.com")
    harness.add_unit(UNIT_A, "Retail")
    harness.add_unit(UNIT_B, "Research")

    own = place(harness, order_body(unit_id=UNIT_A), role="unit_admin", units=(UNIT_A,))
    assert own.json["status"] == "approved"
    assert own.json["unit"] == {"id": UNIT_A, "name": "Retail"}

    other = place(harness, order_body(unit_id=UNIT_B), role="unit_admin", units=(UNIT_A,))
    assert other.status_code == 422
    assert "unit_id" in other.json["errors"]

    no_unit = place(harness, order_body(), role="unit_admin", units=(UNIT_A, UNIT_B))
    assert no_unit.json["status"] == "pending_approval"


def test_an_order_defaults_to_the_requesters_only_unit(harness, order_body):
    harness.add_unit(UNIT_A, "Retail")
    answer = place(harness, order_body(), units=(UNIT_A,))
    assert answer.json["unit"] == {"id": UNIT_A, "name": "Retail"}


def test_an_admin_may_order_for_any_unit_of_the_account_but_not_another_accounts(
        harness, order_body):
    harness.add_unit(UNIT_A, "Retail")
    harness.add_unit(UNIT_B, "Elsewhere", account_id=OTHER_ACCOUNT)
    assert place(harness, order_body(unit_id=UNIT_A), role="admin").status_code == 201
    foreign = place(harness, order_body(unit_id=UNIT_B), role="admin")
    assert foreign.status_code == 422
    assert "unit_id" in foreign.json["errors"]


def test_the_unit_name_follows_identitys_renames(harness, order_body):
    harness.add_unit(UNIT_A, "Retail")
    order = place(harness, order_body(unit_id=UNIT_A), units=(UNIT_A,)).json
    harness.deliver("identity.unit.updated", {"unit_id": UNIT_A, "name": "Stores"},
                    source="identity")
    shown = harness.client.get(f"{ORDERS}/{order['id']}", headers=harness.headers("admin"))
    assert shown.json["unit"] == {"id": UNIT_A, "name": "Stores"}


def test_the_platform_operator_does_not_place_orders(harness, order_body):
    answer = place(harness, order_body(), role="operator", account_id=None)
    assert answer.status_code == 403
    assert answer.json["missing_permission"] == "request_certificates"


# --- approval ----------------------------------------------------------------------------


@pytest.fixture
def pending(harness, order_body):
    """A limited user's order, pending approval, in unit A."""
    harness.add_unit(UNIT_A, "Retail")
    answer = place(harness, order_body(sans=["example.com"]), user_id="u-req",
                   units=(UNIT_A,))
    assert answer.json["status"] == "pending_approval"
    return answer.json


def approve(harness, order_id, role="admin", **who):
    return harness.client.post(f"{ORDERS}/{order_id}/approve", json={"note": "fine"},
                               headers=harness.headers(role, **who))


def test_approval_is_refused_until_the_operator_validates_the_domain(harness, pending):
    refused = approve(harness, pending["id"])

    assert refused.status_code == 422
    assert refused.json["code"] == "domain_not_validated"
    assert refused.json["domains"] == ["example.com"]
    assert refused.json["names"] == ["www.example.com", "example.com"]
    assert refused.json["submit_domain_url"] == "/api/orders/v1/domains"
    assert harness.outbox("orders.order.approved") == []

    harness.validate_domain("example.com")
    accepted = approve(harness, pending["id"], name="Ada Admin")

    assert accepted.status_code == 200
    assert accepted.json["status"] == "approved"
    assert accepted.json["history"][-1]["actor"]["name"] == "Ada Admin"
    assert accepted.json["history"][-1]["details"] == {"automatic": False, "note": "fine"}
    [event] = harness.outbox("orders.order.approved")
    assert event["correlation_id"] == pending["id"]
    assert event["data"]["unit_id"] == UNIT_A


def test_a_domain_of_another_account_does_not_count(harness, pending):
    harness.validate_domain("example.com", account_id=OTHER_ACCOUNT)
    assert approve(harness, pending["id"]).json["code"] == "domain_not_validated"


def test_approving_twice_conflicts(harness, pending):
    harness.validate_domain("example.com")
    assert approve(harness, pending["id"]).status_code == 200
    again = approve(harness, pending["id"])
    assert again.status_code == 409
    assert again.json["order_status"] == "approved"
    assert len(harness.outbox("orders.order.approved")) == 1


def test_two_approvers_at_once_approve_exactly_once(harness, pending):
    harness.validate_domain("example.com")
    app = harness.service.create_app()
    statuses: list[int] = []
    start = threading.Barrier(2)

    def approver() -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.post(f"{ORDERS}/{pending['id']}/approve", json={},
                                    headers=harness.headers("admin")).status_code)

    threads = [threading.Thread(target=approver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 409]
    assert len(harness.outbox("orders.order.approved")) == 1


def test_a_unit_admin_of_the_orders_unit_approves_it(harness, pending):
    harness.validate_domain("example.com")
    assert approve(harness, pending["id"], role="unit_admin", units=(UNIT_A,)).status_code == 200


def test_a_unit_admin_of_another_unit_cannot_even_see_the_order(harness, pending):
    other_unit_admin = harness.headers("unit_admin", units=(UNIT_B,))
    assert harness.client.get(f"{ORDERS}/{pending['id']}",
                              headers=other_unit_admin).status_code == 404
    assert harness.client.get(ORDERS, headers=other_unit_admin).json["items"] == []
    assert approve(harness, pending["id"], role="unit_admin",
                   units=(UNIT_B,)).status_code == 404


def test_finance_sees_every_order_but_cannot_approve(harness, pending):
    finance = harness.headers("finance")
    assert harness.client.get(f"{ORDERS}/{pending['id']}", headers=finance).status_code == 200
    assert [o["id"] for o in harness.client.get(ORDERS, headers=finance).json["items"]] == [
        pending["id"]]
    refused = approve(harness, pending["id"], role="finance")
    assert refused.status_code == 403
    assert refused.json["missing_permission"] == "approve_orders"


def test_the_requester_cannot_approve_their_own_order(harness, pending):
    refused = approve(harness, pending["id"], role="limited", user_id="u-req")
    assert refused.status_code == 403
    assert refused.json["missing_permission"] == "approve_orders"


def test_a_unit_admin_who_requested_for_another_unit_sees_but_cannot_approve(
        harness, order_body):
    harness.add_unit(UNIT_A, "Retail")
    harness.validate_domain("example.com")
    order = place(harness, order_body(), role="unit_admin", user_id="u-ua",
                  units=(UNIT_B,)).json  # no unit of theirs known: no unit, waits
    assert order["status"] == "pending_approval"
    refused = approve(harness, order["id"], role="unit_admin", user_id="u-ua", units=(UNIT_B,))
    assert refused.status_code == 403
    assert refused.json["missing_permission"] == "approve_orders"


def test_another_accounts_order_is_not_found(harness, pending):
    for role in ("admin", "finance"):
        stranger = harness.headers(role, account_id=OTHER_ACCOUNT)
        assert harness.client.get(f"{ORDERS}/{pending['id']}",
                                  headers=stranger).status_code == 404
        assert harness.client.get(ORDERS, headers=stranger).json["items"] == []
    assert approve(harness, pending["id"], account_id=OTHER_ACCOUNT).status_code == 404
    assert harness.client.post(f"{ORDERS}/{pending['id']}/cancel", json={},
                               headers=harness.headers("admin", account_id=OTHER_ACCOUNT)
                               ).status_code == 404


def test_the_platform_operator_does_not_read_orders(harness, pending):
    operator = harness.headers("operator", account_id=None)
    answer = harness.client.get(ORDERS, headers=operator)
    assert answer.status_code == 403
    assert answer.json["missing_permission"] == "read_orders"


# --- rejection and cancellation --------------------------------------------------------


def test_an_approver_rejects_a_pending_order_with_a_reason(harness, pending):
    answer = harness.client.post(f"{ORDERS}/{pending['id']}/reject",
                                 json={"reason": "not our domain"},
                                 headers=harness.headers("admin", name="Ada Admin"))
    assert answer.status_code == 200
    assert answer.json["status"] == "rejected"
    [event] = harness.outbox("orders.order.rejected")
    assert event["data"] == {"order_id": pending["id"], "reason": "not our domain"}
    assert event["summary"].startswith("Ada Admin rejected order")
    again = harness.client.post(f"{ORDERS}/{pending['id']}/reject", json={"reason": "x"},
                                headers=harness.headers("admin"))
    assert again.status_code == 409


def test_a_rejection_needs_a_reason(harness, pending):
    answer = harness.client.post(f"{ORDERS}/{pending['id']}/reject", json={},
                                 headers=harness.headers("admin"))
    assert answer.status_code == 422
    assert "reason" in answer.json["errors"]


def test_the_requester_cancels_their_pending_order(harness, pending):
    answer = harness.client.post(f"{ORDERS}/{pending['id']}/cancel",
                                 json={"reason": "wrong name"},
                                 headers=harness.headers("limited", user_id="u-req"))
    assert answer.status_code == 200
    assert answer.json["status"] == "cancelled"
    [event] = harness.outbox("orders.order.cancelled")
    assert event["data"] == {"order_id": pending["id"], "reason": "wrong name"}
    assert event["correlation_id"] == pending["id"]


def test_an_approved_order_can_still_be_cancelled_by_an_approver(harness, pending):
    harness.validate_domain("example.com")
    approve(harness, pending["id"])
    answer = harness.client.post(f"{ORDERS}/{pending['id']}/cancel", json={},
                                 headers=harness.headers("unit_admin", units=(UNIT_A,)))
    assert answer.json["status"] == "cancelled"


def test_finance_cannot_cancel_someone_elses_order(harness, pending):
    answer = harness.client.post(f"{ORDERS}/{pending['id']}/cancel", json={},
                                 headers=harness.headers("finance"))
    assert answer.status_code == 403
    assert answer.json["missing_permission"] == "cancel_orders"


# --- listing -----------------------------------------------------------------------------


def test_a_limited_user_lists_only_their_own_orders(harness, order_body):
    mine = place(harness, order_body(), user_id="u-me").json
    place(harness, order_body(), user_id="u-someone-else")
    listed = harness.client.get(ORDERS, headers=harness.headers("limited", user_id="u-me"))
    assert [o["id"] for o in listed.json["items"]] == [mine["id"]]


def test_orders_are_listed_newest_first_page_by_page_and_filtered_by_status(
        harness, order_body):
    ids = [place(harness, order_body()).json["id"] for _ in range(5)]
    harness.client.post(f"{ORDERS}/{ids[1]}/reject", json={"reason": "no"},
                        headers=harness.headers("admin"))
    admin = harness.headers("admin")

    first = harness.client.get(f"{ORDERS}?limit=3", headers=admin).json
    second = harness.client.get(f"{ORDERS}?limit=3&cursor={first['next_cursor']}",
                                headers=admin).json
    assert [o["id"] for o in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None
    rejected = harness.client.get(f"{ORDERS}?status=rejected", headers=admin).json["items"]
    assert [o["id"] for o in rejected] == [ids[1]]
    assert harness.client.get(f"{ORDERS}?status=bogus", headers=admin).status_code == 422
