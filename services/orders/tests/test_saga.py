"""The order saga as orders plays it: ledger's and ca-signer's answers, and downloads."""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from .conftest import ACCOUNT, OTHER_ACCOUNT

ORDERS = "/api/orders/v1/orders"
SIGN = "ca_signer.certificate.sign"


@pytest.fixture
def approved(harness, order_body):
    """An admin's order for a validated domain: approved at once."""
    harness.validate_domain("example.com")
    answer = harness.client.post(ORDERS, json=order_body(sans=["example.com"]),
                                 headers=harness.headers("admin", user_id="u-admin"))
    assert answer.json["status"] == "approved"
    return answer.json


def show(harness, order_id):
    return harness.client.get(f"{ORDERS}/{order_id}",
                              headers=harness.headers("admin", user_id="u-admin")).json


def reserve(harness, order, **kwargs):
    return harness.deliver("ledger.funds.reserved",
                           {"order_id": order["id"], "amount_cents": order["price_cents"],
                            "available_cents": 100}, correlation_id=order["id"], **kwargs)


def issuing(harness, order):
    reserve(harness, order)
    [command] = harness.outbox(SIGN)
    return command


def test_reserved_funds_start_issuance_with_exactly_one_sign_command(harness, approved):
    handled, envelope = reserve(harness, approved)

    assert handled
    assert show(harness, approved["id"])["status"] == "issuing"
    [command] = harness.outbox(SIGN)
    assert command["correlation_id"] == approved["id"]
    assert command["causation_id"] == envelope.event_id
    assert command["account_id"] == ACCOUNT
    assert command["actor"] == {"system": "orders"}
    data = command["data"]
    assert data["order_id"] == approved["id"]
    uuid.UUID(data["issuance_id"])
    assert data["profile"] == "dv"
    assert data["subject"] == {"common_name": "www.example.com"}
    assert data["sans"] == ["www.example.com", "example.com"]
    assert data["csr_pem"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert data["not_after"] is None


def test_a_redelivered_reservation_sends_no_second_command(harness, approved):
    _, envelope = reserve(harness, approved)
    handled_again, _ = reserve(harness, approved, envelope=envelope)

    assert handled_again is False
    assert len(harness.outbox(SIGN)) == 1


def test_a_second_reservation_message_sends_no_second_command(harness, approved):
    reserve(harness, approved)
    handled, _ = reserve(harness, approved)  # a new event id: the inbox cannot catch it

    assert handled
    assert len(harness.outbox(SIGN)) == 1
    history = [h["action"] for h in show(harness, approved["id"])["history"]]
    assert history.count("issuing") == 1


def test_reserved_funds_for_an_order_that_is_not_approved_are_ignored(harness, order_body):
    pending = harness.client.post(ORDERS, json=order_body(), headers=harness.headers("limited"))
    reserve(harness, pending.json)
    assert harness.outbox(SIGN) == []


def test_a_message_about_another_accounts_order_changes_nothing(harness, approved):
    reserve(harness, approved, account_id=OTHER_ACCOUNT)
    assert harness.outbox(SIGN) == []
    assert show(harness, approved["id"])["status"] == "approved"


def test_declined_funds_leave_the_order_awaiting_funds_until_ledger_reserves(harness,
                                                                             approved):
    harness.deliver("ledger.funds.declined",
                    {"order_id": approved["id"], "amount_cents": 4900, "available_cents": 100},
                    correlation_id=approved["id"])

    order = show(harness, approved["id"])
    assert order["status"] == "awaiting_funds"
    assert order["history"][-1]["actor"]["name"] == "ledger"
    [event] = harness.outbox("orders.order.awaiting_funds")
    assert event["data"] == {"order_id": approved["id"], "price_cents": 4900,
                             "available_cents": 100}
    assert harness.outbox(SIGN) == []

    reserve(harness, approved)  # a deposit landed
    assert show(harness, approved["id"])["status"] == "issuing"
    assert len(harness.outbox(SIGN)) == 1


def issued_event(command, leaf_pem, chain_pem, serial="7f3a11"):
    return {"order_id": command["data"]["order_id"],
            "issuance_id": command["data"]["issuance_id"], "serial": serial,
            "issuer_id": "issuer-1", "not_before": "2026-11-26T18:00:00Z",
            "not_after": "2027-06-13T17:59:59Z", "sans": command["data"]["sans"],
            "certificate_pem": leaf_pem, "chain_pem": chain_pem}


def test_an_issued_certificate_completes_the_order(harness, approved, self_signed):
    command = issuing(harness, approved)
    leaf, chain = self_signed

    harness.deliver("ca_signer.certificate.issued", issued_event(command, leaf, chain),
                    source="ca_signer", correlation_id=approved["id"])

    order = show(harness, approved["id"])
    assert order["status"] == "issued"
    assert order["certificate"] == {"serial": "7f3a11", "not_before": "2026-11-26T18:00:00Z",
                                    "not_after": "2027-06-13T17:59:59Z", "status": "issued"}
    assert order["history"][-1]["action"] == "issued"
    [event] = harness.outbox("orders.order.issued")
    assert event["data"] == {"order_id": approved["id"], "serial": "7f3a11"}
    assert event["correlation_id"] == approved["id"]


def test_a_second_issued_message_for_the_same_issuance_is_ignored(harness, approved,
                                                                 self_signed):
    command = issuing(harness, approved)
    leaf, chain = self_signed
    for _ in range(2):
        harness.deliver("ca_signer.certificate.issued", issued_event(command, leaf, chain),
                        source="ca_signer")
    assert len(harness.outbox("orders.order.issued")) == 1


def test_a_refused_signature_fails_the_order_with_the_reason_visible(harness, approved):
    command = issuing(harness, approved)

    harness.deliver("ca_signer.certificate.rejected",
                    {"order_id": approved["id"], "issuance_id": command["data"]["issuance_id"],
                     "reason": "key is on the compromised-key blocklist",
                     "lint_findings": [{"code": "x", "severity": "error"}]},
                    source="ca_signer")

    order = show(harness, approved["id"])
    assert order["status"] == "failed"
    assert order["failure_reason"] == "key is on the compromised-key blocklist"
    assert order["history"][-1]["details"]["lint_findings"] == [{"code": "x",
                                                                  "severity": "error"}]
    [event] = harness.outbox("orders.order.failed")
    assert event["data"] == {"order_id": approved["id"],
                             "reason": "key is on the compromised-key blocklist"}


def test_an_answer_for_an_unknown_issuance_is_ignored(harness, approved, self_signed):
    command = issuing(harness, approved)
    event = issued_event(command, *self_signed)
    event["issuance_id"] = str(uuid.uuid4())
    harness.deliver("ca_signer.certificate.issued", event, source="ca_signer")
    assert show(harness, approved["id"])["status"] == "issuing"


def test_an_order_being_issued_can_no_longer_be_cancelled(harness, approved):
    issuing(harness, approved)
    answer = harness.client.post(f"{ORDERS}/{approved['id']}/cancel", json={},
                                 headers=harness.headers("admin"))
    assert answer.status_code == 409


# --- downloads ---------------------------------------------------------------------------


@pytest.fixture
def issued(harness, approved, self_signed):
    command = issuing(harness, approved)
    harness.deliver("ca_signer.certificate.issued", issued_event(command, *self_signed),
                    source="ca_signer")
    return approved


def download(harness, order_id, fmt=None, **who):
    query = f"?format={fmt}" if fmt else ""
    return harness.client.get(f"{ORDERS}/{order_id}/certificate{query}",
                              headers=harness.headers(who.pop("role", "admin"), **who))


def test_the_certificate_downloads_in_every_format(harness, issued, self_signed):
    leaf_pem, chain_pem = self_signed
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    ca = x509.load_pem_x509_certificate(chain_pem.encode())

    pem = download(harness, issued["id"], "pem")
    assert pem.status_code == 200
    assert pem.mimetype == "application/x-pem-file"
    assert x509.load_pem_x509_certificate(pem.data) == leaf
    assert 'filename="www.example.com.pem"' in pem.headers["Content-Disposition"]

    chain = download(harness, issued["id"], "pem-chain")
    assert x509.load_pem_x509_certificates(chain.data) == [leaf, ca]

    der = download(harness, issued["id"], "der")
    assert der.mimetype == "application/pkix-cert"
    assert x509.load_der_x509_certificate(der.data) == leaf

    p7b = download(harness, issued["id"], "p7b")
    assert p7b.mimetype == "application/pkcs7-mime"
    # A SET OF in DER: the order inside is the encoding's, not the chain's.
    assert set(pkcs7.load_der_pkcs7_certificates(p7b.data)) == {leaf, ca}


def test_the_requester_downloads_their_certificate_but_a_stranger_cannot(harness, issued):
    assert download(harness, issued["id"], role="admin", user_id="u-admin").status_code == 200
    assert download(harness, issued["id"], account_id=OTHER_ACCOUNT).status_code == 404
    assert download(harness, issued["id"], role="limited").status_code == 404


def test_an_unknown_format_is_refused(harness, issued):
    answer = download(harness, issued["id"], "jks")
    assert answer.status_code == 422
    assert "format" in answer.json["errors"]


def test_there_is_nothing_to_download_before_issuance(harness, approved):
    answer = download(harness, approved["id"])
    assert answer.status_code == 409
    assert answer.json["code"] == "not_issued"
