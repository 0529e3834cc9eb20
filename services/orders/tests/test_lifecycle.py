"""An order's life around issuance: edit before approval, the CSR's names, reissue,
revocation, refund, assignment and renewal — each transition and each refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from .conftest import ACCOUNT, OTHER_ACCOUNT, UNIT_A, UNIT_B, csr_pem
from .lifecycle_support import (
    ASSIGNEE,
    ORDERS,
    REQUESTER,
    REVOKE,
    add_user,
    answer_sign,
    call,
    issued_order,
    messages_about,
    pending_order,
    prepare_account,
    show,
    sign_commands,
    stored_issued_order,
)


def csr_for(key, *names: str, ips: tuple[str, ...] = (), cn: str | None = None) -> str:
    """A CSR signed by ``key`` carrying CN ``cn`` (default: the first name) and the names."""
    import ipaddress

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or names[0])])
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i))
                                              for i in ips]
    built = (x509.CertificateSigningRequestBuilder().subject_name(subject)
             .add_extension(x509.SubjectAlternativeName(sans), critical=False)
             .sign(key, hashes.SHA256()))
    return built.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def account(shared_harness):
    """One service for the refusal tables: each case works on its own order."""
    prepare_account(shared_harness)
    return shared_harness


# --- the CSR's names must be among the requested names -------------------------------

CSR_NAMES = [
    ("the common name only", ("www.example.com",), (), None, 201),
    ("every requested name", ("www.example.com", "example.com"), (), None, 201),
    ("names in other letter case", ("WWW.Example.COM",), (), None, 201),
    ("a name not requested", ("www.example.com", "mail.example.com"), (), None, 422),
    ("another domain", ("www.example.org",), (), None, 422),
    ("an IP address", ("www.example.com",), ("192.0.2.7",), None, 422),
    ("a CN that is no host name", ("www.example.com",), (), "Web Server", 422),
]


@pytest.mark.parametrize(("case", "names", "ips", "cn", "status"), CSR_NAMES,
                         ids=[c[0] for c in CSR_NAMES])
def test_a_csr_may_carry_only_requested_names(account, ec_key, case, names, ips, cn, status):
    body = {"product": "ssl_dv", "term_years": 1, "server_type": "nginx",
            "common_name": "www.example.com", "sans": ["example.com"],
            "csr": csr_for(ec_key, *names, ips=ips, cn=cn)}
    answer = account.client.post(ORDERS, json=body, headers=account.headers("limited"))
    assert answer.status_code == status, answer.json
    if status == 422:
        assert set(answer.json["errors"]) == {"csr"}
        assert "not among the requested names" in answer.json["errors"]["csr"][0]


# --- editing before approval -----------------------------------------------------------


def test_an_approver_edits_a_pending_order_and_the_diff_is_kept(harness, csr, ec_key):
    harness.add_unit(UNIT_A, "Retail")
    order = pending_order(harness, csr)
    new_csr = csr_for(ec_key, "shop.example.com")
    answer = harness.client.patch(
        f"{ORDERS}/{order['id']}",
        json={"product": "ssl_multi_domain_ov", "term_years": 2, "common_name": "Shop.Example.com",
              "sans": ["a.example.com", "b.example.com", "c.example.com", "d.example.com"],
              "csr": new_csr, "server_type": "apache", "notes": None,
              "organization_id": harness.organization()["id"]},
        headers=harness.headers("unit_admin", units=(UNIT_A,), name="Uma Unit"))

    assert answer.status_code == 200, answer.json
    edited = answer.json
    assert edited["status"] == "pending_approval"
    assert edited["sans"] == ["shop.example.com", "a.example.com", "b.example.com",
                              "c.example.com", "d.example.com"]
    assert edited["price_cents"] == 75900 + 9300  # 5 names: 4 included, one extra, 2 years
    assert edited["key_type"] == "ECDSA P-256"
    entry = edited["history"][-1]
    assert (entry["action"], entry["actor"]["name"]) == ("edited", "Uma Unit")
    changes = entry["details"]["changes"]
    assert changes["product"] == ["ssl_dv", "ssl_multi_domain_ov"]
    assert changes["term_years"] == [1, 2]
    assert changes["common_name"] == ["www.example.com", "shop.example.com"]
    assert changes["price_cents"] == [4900, 85200]
    assert changes["notes"] == ["for the shop", None]
    assert changes["key_type"] == ["RSA 2048", "ECDSA P-256"]
    assert changes["csr"][0].startswith("sha256:") and changes["csr"][0] != changes["csr"][1]
    assert "unit_id" not in changes
    [event] = harness.outbox("orders.order.edited")
    assert event["data"] == {"order_id": order["id"], "changes": changes}
    assert event["correlation_id"] == order["id"]
    assert event["summary"].startswith("Uma Unit edited order")
    # the requester sees what was changed, by whom
    mine = show(harness, order["id"], "limited requester")
    assert mine["history"][-1]["details"]["changes"] == changes


def test_an_edit_that_changes_nothing_records_nothing(harness, csr):
    harness.add_unit(UNIT_A, "Retail")
    order = pending_order(harness, csr)
    answer = call(harness, "PATCH", f"{ORDERS}/{order['id']}", "admin",
                  {"common_name": "WWW.EXAMPLE.COM.", "notes": "for the shop"})
    assert answer.status_code == 200
    assert [h["action"] for h in answer.json["history"]] == ["submitted"]
    assert harness.outbox("orders.order.edited") == []


BAD_EDITS = [
    ("unknown product", {"product": "ssl_platinum"}, "product"),
    ("term the product does not sell", {"term_years": 4}, "term_years"),
    ("wildcard on a DV product", {"common_name": "*.example.com"}, "common_name"),
    ("too many names", {"sans": ["a.example.com", "b.example.com"]}, "sans"),
    ("an internal name", {"sans": ["nas.local"]}, "sans"),
    ("a new name the CSR does not carry... and the CSR's name dropped",
     {"common_name": "shop.example.com", "sans": []}, "csr"),
    ("a broken CSR", {"csr": "not a csr"}, "csr"),
    ("unknown server type", {"server_type": "commodore64"}, "server_type"),
    ("a unit of another account", {"unit_id": "unit-elsewhere"}, "unit_id"),
    ("no unit at all", {"unit_id": None}, "unit_id"),
]


@pytest.mark.parametrize(("case", "edit", "field"), BAD_EDITS, ids=[c[0] for c in BAD_EDITS])
def test_an_edit_is_checked_like_a_new_request(account, csr, case, edit, field):
    order = pending_order(account, csr)
    answer = call(account, "PATCH", f"{ORDERS}/{order['id']}", "admin", edit)
    assert answer.status_code == 422, answer.json
    assert field in answer.json["errors"], answer.json
    after = show(account, order["id"])
    assert (after["history"], after["sans"], after["price_cents"]) == (
        order["history"], order["sans"], order["price_cents"])
    assert messages_about(account, order["id"], "orders.order.edited") == []


def test_a_unit_admin_cannot_move_an_order_to_a_unit_not_theirs(account, csr):
    order = pending_order(account, csr)
    answer = account.client.patch(f"{ORDERS}/{order['id']}", json={"unit_id": UNIT_B},
                                  headers=account.headers("unit_admin", units=(UNIT_A,)))
    assert answer.status_code == 422
    assert "unit_id" in answer.json["errors"]


def test_only_a_pending_order_can_be_edited(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "PATCH", f"{ORDERS}/{order_id}", "admin", {"notes": "late"})
    assert answer.status_code == 409
    assert answer.json["code"] == "invalid_order_state"


# --- reissue ---------------------------------------------------------------------------


def test_a_reissue_replaces_the_certificate_and_revokes_the_old_one_as_superseded(
        harness, csr, self_signed, ec_key):
    order = issued_order(harness, csr, self_signed)
    old_serial = order["certificate"]["serial"]
    new_csr = csr_for(ec_key, "www.example.com", "api.example.com")

    answer = call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "limited assignee",
                  {"csr": new_csr, "sans": ["api.example.com"]})

    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "issued"
    assert answer.json["reissue_pending"] is True
    assert answer.json["certificate"]["serial"] == old_serial  # until the new one arrives
    assert answer.json["history"][-1]["action"] == "reissue_requested"
    assert answer.json["history"][-1]["details"]["added"] == ["api.example.com"]
    assert answer.json["history"][-1]["details"]["removed"] == ["example.com"]
    first, second = sign_commands(harness, order["id"])
    assert second["data"]["issuance_id"] != first["data"]["issuance_id"]
    assert second["data"]["sans"] == ["www.example.com", "api.example.com"]
    assert second["data"]["csr_pem"].strip() == new_csr.strip()
    assert second["correlation_id"] == order["id"]
    assert harness.outbox("orders.order.approved")[-1]["data"]["order_id"] == order["id"]
    assert len(harness.outbox("orders.order.approved")) == 1  # no second charge
    [requested] = harness.outbox("orders.order.reissue_requested")
    assert requested["data"]["automatic"] is False
    assert requested["data"]["revoke_previous"] is True

    answer_sign(harness, second, self_signed, "bb02", datetime.now(UTC).replace(microsecond=0))

    shown = show(harness, order["id"], "limited requester")
    assert shown["status"] == "issued" and shown["reissue_pending"] is False
    assert shown["certificate"]["serial"] == "bb02"
    assert shown["sans"] == ["www.example.com", "api.example.com"]
    assert shown["key_type"] == "ECDSA P-256"
    assert [(c["serial"], c["status"], c["current"]) for c in shown["certificates"]] == [
        ("bb02", "issued", True), (old_serial, "revocation_requested", False)]
    [revoke] = harness.outbox(REVOKE)
    assert revoke["data"] == {"serial": old_serial, "reason": "superseded"}
    assert revoke["correlation_id"] == order["id"]
    [reissued] = harness.outbox("orders.order.reissued")
    assert reissued["data"]["previous_serial"] == old_serial
    assert harness.outbox("orders.order.issued")[-1]["data"]["serial"] == old_serial

    harness.deliver("ca_signer.certificate.revoked",
                    {"serial": old_serial, "reason": "superseded",
                     "revoked_at": "2026-11-26T20:00:00Z"}, source="ca_signer")
    shown = show(harness, order["id"])
    assert shown["status"] == "issued"
    assert shown["certificates"][1]["status"] == "revoked"
    assert shown["certificates"][1]["revoked_at"] == "2026-11-26T20:00:00Z"
    assert shown["history"][-1]["action"] == "certificate_revoked"


def test_a_reissue_may_keep_the_previous_certificate_valid(harness, csr, self_signed):
    order = issued_order(harness, csr, self_signed)
    call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "limited requester",
         {"csr": csr, "revoke_previous": False})
    answer_sign(harness, sign_commands(harness, order["id"])[-1], self_signed, "cc03",
                datetime.now(UTC).replace(microsecond=0))

    shown = show(harness, order["id"])
    assert [(c["serial"], c["status"]) for c in shown["certificates"]] == [
        ("cc03", "issued"), (order["certificate"]["serial"], "issued")]
    assert harness.outbox(REVOKE) == []


def test_a_rejected_reissue_leaves_the_old_certificate_current_and_says_why(
        harness, csr, self_signed):
    order = issued_order(harness, csr, self_signed)
    call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin", {"csr": csr})
    command = sign_commands(harness, order["id"])[-1]

    harness.deliver("ca_signer.certificate.rejected",
                    {"order_id": order["id"], "issuance_id": command["data"]["issuance_id"],
                     "reason": "the key is on the blocklist", "lint_findings": []},
                    source="ca_signer")

    shown = show(harness, order["id"], "limited requester")
    assert shown["status"] == "issued" and shown["reissue_pending"] is False
    assert shown["certificate"] == order["certificate"]
    assert shown["failure_reason"] is None
    assert shown["history"][-1]["action"] == "reissue_failed"
    assert shown["history"][-1]["details"]["reason"] == "the key is on the blocklist"
    [failed] = harness.outbox("orders.order.reissue_failed")
    assert failed["data"]["reason"] == "the key is on the blocklist"
    assert harness.outbox("orders.order.failed") == []
    # and the order can be reissued again
    again = call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin", {"csr": csr})
    assert again.status_code == 200


BAD_REISSUES = [
    ("a name of an unvalidated domain", {"sans": ["www.example.org"]}, 422,
     "domain_not_validated"),
    ("more names than the product allows", {"sans": ["a.example.com", "b.example.com"]},
     422, "validation_failed"),
    ("a wildcard on a DV product", {"sans": ["*.example.com"]}, 422, "validation_failed"),
    ("a broken CSR", {"csr": "garbage"}, 422, "validation_failed"),
    ("a CSR for other names", {"csr": "OTHER"}, 422, "validation_failed"),
    ("no CSR", {"csr": None}, 422, None),
]


@pytest.mark.parametrize(("case", "change", "status", "code"), BAD_REISSUES,
                         ids=[c[0] for c in BAD_REISSUES])
def test_a_reissue_is_refused_for_names_and_csrs_it_may_not_have(
        account, csr, self_signed, ec_key, case, change, status, code):
    order_id = stored_issued_order(account, csr, self_signed)
    body = {"csr": csr, **change}
    if body["csr"] == "OTHER":
        body["csr"] = csr_for(ec_key, "www.example.org")
    if body["csr"] is None:
        del body["csr"]
    answer = call(account, "POST", f"{ORDERS}/{order_id}/reissue", "admin", body)
    assert answer.status_code == status, answer.json
    if code:
        assert answer.json["code"] == code
    if code == "domain_not_validated":
        assert answer.json["domains"] == ["example.org"]
    assert messages_about(account, order_id) == []


def test_a_reissue_waits_for_the_one_in_progress(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    assert call(account, "POST", f"{ORDERS}/{order_id}/reissue", "admin",
                {"csr": csr}).status_code == 200
    again = call(account, "POST", f"{ORDERS}/{order_id}/reissue", "admin", {"csr": csr})
    assert again.status_code == 409
    assert again.json["code"] == "reissue_pending"
    assert len(sign_commands(account, order_id)) == 1


@pytest.mark.parametrize("action", ["reissue", "revoke", "refund"])
def test_an_order_not_issued_cannot_be_reissued_revoked_or_refunded(account, csr, action):
    order = pending_order(account, csr)
    body = {"reissue": {"csr": csr}, "revoke": {"reason": "unspecified"}, "refund": {}}[action]
    answer = call(account, "POST", f"{ORDERS}/{order['id']}/{action}", "admin", body)
    assert answer.status_code == 409
    assert answer.json["code"] == "invalid_order_state"


# --- revocation ------------------------------------------------------------------------

REASONS = ["unspecified", "key_compromise", "affiliation_changed", "superseded",
           "cessation_of_operation", "privilege_withdrawn"]


@pytest.mark.parametrize("reason", REASONS)
def test_an_order_is_revoked_with_an_rfc_5280_reason(account, csr, self_signed, reason):
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "POST", f"{ORDERS}/{order_id}/revoke", "limited requester",
                  {"reason": reason})

    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "revoked"
    assert answer.json["revocation_reason"] == reason
    serial = answer.json["certificate"]["serial"]
    assert answer.json["certificate"]["status"] == "revocation_requested"
    [revoked] = messages_about(account, order_id, "orders.order.revoked")
    assert revoked["data"] == {"order_id": order_id, "reason": reason, "serials": [serial]}
    assert revoked["summary"].startswith("Limited Requester revoked order")
    [command] = messages_about(account, order_id, REVOKE)
    assert command["data"] == {"serial": serial, "reason": reason}
    again = call(account, "POST", f"{ORDERS}/{order_id}/revoke", "admin", {"reason": reason})
    assert again.status_code == 409


@pytest.mark.parametrize("reason", ["keyCompromise", "because", "", "ca_compromise",
                                    "remove_from_crl"])
def test_a_reason_rfc_5280_does_not_give_a_subscriber_is_refused(account, csr, self_signed,
                                                                 reason):
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "POST", f"{ORDERS}/{order_id}/revoke", "admin", {"reason": reason})
    assert answer.status_code == 422
    assert "reason" in answer.json["errors"]
    assert show(account, order_id)["status"] == "issued"
    assert messages_about(account, order_id) == []


def test_ca_signers_confirmation_marks_the_certificate_revoked(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    serial = call(account, "POST", f"{ORDERS}/{order_id}/revoke", "admin",
                  {"reason": "key_compromise"}).json["certificate"]["serial"]
    for _ in range(2):  # a repeated confirmation changes nothing more
        account.deliver("ca_signer.certificate.revoked",
                        {"serial": serial, "reason": "key_compromise",
                         "revoked_at": "2026-11-26T21:00:00Z"}, source="ca_signer")
    shown = show(account, order_id)
    assert shown["certificate"]["status"] == "revoked"
    assert [h["action"] for h in shown["history"]].count("certificate_revoked") == 1


def test_a_confirmation_for_another_accounts_or_an_unknown_serial_changes_nothing(
        account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    serial = show(account, order_id)["certificate"]["serial"]
    for who, what in ((OTHER_ACCOUNT, serial), (ACCOUNT, "ffff0000")):
        account.deliver("ca_signer.certificate.revoked",
                        {"serial": what, "reason": "key_compromise",
                         "revoked_at": "2026-11-26T21:00:00Z"},
                        source="ca_signer", account_id=who)
    shown = show(account, order_id)
    assert (shown["status"], shown["certificate"]["status"]) == ("issued", "issued")


def test_a_certificate_the_ca_revoked_by_itself_ends_the_order(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    serial = show(account, order_id)["certificate"]["serial"]
    account.deliver("ca_signer.certificate.revoked",
                    {"serial": serial, "reason": "privilege_withdrawn",
                     "revoked_at": "2026-11-26T21:00:00Z"}, source="ca_signer",
                    correlation_id=order_id)
    shown = show(account, order_id)
    assert (shown["status"], shown["revocation_reason"]) == ("revoked", "privilege_withdrawn")
    [event] = messages_about(account, order_id, "orders.order.revoked")
    assert event["actor"] == {"system": "orders"}


def test_a_reissue_signed_after_the_order_was_revoked_is_revoked_too(
        harness, csr, self_signed):
    order = issued_order(harness, csr, self_signed)
    call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin", {"csr": csr})
    call(harness, "POST", f"{ORDERS}/{order['id']}/revoke", "admin",
         {"reason": "key_compromise"})

    answer_sign(harness, sign_commands(harness, order["id"])[-1], self_signed, "dd04",
                datetime.now(UTC).replace(microsecond=0))

    shown = show(harness, order["id"])
    assert shown["status"] == "revoked"
    assert [c["data"] for c in harness.outbox(REVOKE)] == [
        {"serial": order["certificate"]["serial"], "reason": "key_compromise"},
        {"serial": "dd04", "reason": "key_compromise"}]
    assert shown["history"][-1]["action"] == "reissued_after_revocation"


# --- refund ----------------------------------------------------------------------------

ISSUED_AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("after", "status"), [
    (timedelta(days=0), 200),
    (timedelta(days=29, hours=23), 200),
    (timedelta(days=30), 200),
    (timedelta(days=30, seconds=1), 409),
    (timedelta(days=90), 409),
], ids=["the same day", "day 29", "exactly 30 days", "a second later", "day 90"])
def test_a_refund_is_possible_for_30_days_after_issuance(account, csr, self_signed, after,
                                                         status):
    order_id = stored_issued_order(account, csr, self_signed, not_before=ISSUED_AT)
    clock, account.service.clock = account.service.clock, lambda: ISSUED_AT + after
    try:
        answer = call(account, "POST", f"{ORDERS}/{order_id}/refund", "unit_admin of the unit",
                      {"note": "bought by mistake"})
    finally:
        account.service.clock = clock
    assert answer.status_code == status, answer.json
    if status == 409:
        assert answer.json["code"] == "refund_window_closed"
        assert answer.json["refund_deadline"] == "2026-12-01T12:00:00Z"
        assert messages_about(account, order_id) == []
        return
    assert answer.json["status"] == "revoked"
    assert answer.json["revocation_reason"] == "cessation_of_operation"
    assert answer.json["refunded_cents"] == 4900
    [refunded] = messages_about(account, order_id, "orders.order.refunded")
    assert refunded["data"] == {"order_id": order_id, "amount_cents": 4900,
                                "note": "bought by mistake"}
    [revoked] = messages_about(account, order_id, "orders.order.revoked")
    assert revoked["data"]["reason"] == "cessation_of_operation"
    [command] = messages_about(account, order_id, REVOKE)
    assert command["data"]["reason"] == "cessation_of_operation"
    assert [h["action"] for h in answer.json["history"]][-2:] == ["revoked", "refunded"]


def test_a_refund_takes_the_reason_given_and_happens_once(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "POST", f"{ORDERS}/{order_id}/refund", "admin",
                  {"reason": "key_compromise"})
    assert answer.json["revocation_reason"] == "key_compromise"
    again = call(account, "POST", f"{ORDERS}/{order_id}/refund", "admin", {})
    assert again.status_code == 409
    assert len(messages_about(account, order_id, "orders.order.refunded")) == 1


# --- assignment ------------------------------------------------------------------------


def test_an_assignee_sees_downloads_and_reissues_and_loses_it_when_removed(
        account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed, assignees=())
    helper = "u-helper"
    add_user(account, helper)
    as_helper = account.headers("limited", user_id=helper)

    def sees() -> bool:
        listed = account.client.get(f"{ORDERS}?limit=500", headers=as_helper).json["items"]
        return order_id in [o["id"] for o in listed]

    assert not sees()
    assert account.client.get(f"{ORDERS}/{order_id}", headers=as_helper).status_code == 404

    answer = call(account, "PUT", f"{ORDERS}/{order_id}/assignees", "admin",
                  {"user_ids": [helper, helper]})
    assert answer.status_code == 200
    assert answer.json["assignees"] == [{"id": helper, "name": "Person u-helper"}]
    [event] = messages_about(account, order_id, "orders.order.assignees_changed")
    assert event["data"] == {"order_id": order_id, "user_ids": [helper]}
    assert "Person u-helper" in event["summary"]
    assert sees()
    assert account.client.get(f"{ORDERS}/{order_id}/certificate",
                              headers=as_helper).status_code == 200
    assert account.client.post(f"{ORDERS}/{order_id}/reissue", json={"csr": csr},
                               headers=as_helper).status_code == 200

    call(account, "PUT", f"{ORDERS}/{order_id}/assignees", "admin", {"user_ids": []})
    assert not sees()
    assert account.client.get(f"{ORDERS}/{order_id}", headers=as_helper).status_code == 404
    assert len(messages_about(account, order_id, "orders.order.assignees_changed")) == 2


def test_assigning_the_same_people_again_changes_nothing(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "PUT", f"{ORDERS}/{order_id}/assignees", "admin",
                  {"user_ids": [ASSIGNEE]})
    assert answer.status_code == 200
    assert messages_about(account, order_id) == []


@pytest.mark.parametrize("who", ["unknown", "inactive", "other account"])
def test_only_active_users_of_the_account_can_be_assigned(account, csr, self_signed, who):
    order_id = stored_issued_order(account, csr, self_signed, assignees=())
    user_id = f"u-{who.replace(' ', '-')}"
    if who == "inactive":
        add_user(account, user_id, active=False)
    elif who == "other account":
        add_user(account, user_id, account_id=OTHER_ACCOUNT)
    answer = call(account, "PUT", f"{ORDERS}/{order_id}/assignees", "admin",
                  {"user_ids": [ASSIGNEE, user_id]})
    assert answer.status_code == 422
    assert answer.json["errors"]["user_ids"] == [
        f"{user_id} is not an active user of this account"]
    assert show(account, order_id)["assignees"] == []


# --- renewal ---------------------------------------------------------------------------


def test_a_renewal_is_a_new_pending_order_prefilled_from_the_old_one(account, csr,
                                                                    self_signed, ec_key):
    order_id = stored_issued_order(account, csr, self_signed)
    old = show(account, order_id)
    answer = call(account, "POST", f"{ORDERS}/{order_id}/renew", "limited assignee",
                  {"csr": csr_pem(ec_key)})

    assert answer.status_code == 201, answer.json
    new = answer.json
    assert new["id"] != order_id
    assert new["status"] == "pending_approval"
    assert new["renewal_of"] == order_id
    for field in ("product", "term_years", "server_type", "common_name", "sans", "unit",
                  "notes", "price_cents"):
        assert new[field] == old[field], field
    assert new["requester"]["id"] == ASSIGNEE
    assert new["key_type"] == "ECDSA P-256"
    assert new["history"][0]["details"]["renewal_of"] == order_id
    [submitted] = messages_about(account, new["id"], "orders.order.submitted")
    assert submitted["data"]["renewal_of"] == order_id
    assert f"renewing order {order_id[:8]}" in submitted["summary"]
    renewed = show(account, order_id)
    assert renewed["status"] == "issued"
    assert renewed["history"][-1]["action"] == "renewal_requested"
    assert renewed["history"][-1]["details"] == {"renewal_order_id": new["id"]}


def test_an_approvers_renewal_is_approved_at_once(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "POST", f"{ORDERS}/{order_id}/renew", "unit_admin of the unit",
                  {"csr": csr, "notes": "next year"})
    assert answer.json["status"] == "approved"
    assert answer.json["notes"] == "next year"


def test_an_order_is_renewed_once_until_that_renewal_ends(account, csr, self_signed):
    order_id = stored_issued_order(account, csr, self_signed)
    first = call(account, "POST", f"{ORDERS}/{order_id}/renew", "limited requester",
                 {"csr": csr}).json
    again = call(account, "POST", f"{ORDERS}/{order_id}/renew", "limited requester",
                 {"csr": csr})
    assert again.status_code == 409
    assert again.json["code"] == "already_renewed"
    assert again.json["renewal_order_id"] == first["id"]
    call(account, "POST", f"{ORDERS}/{first['id']}/reject", "admin", {"reason": "not yet"})
    assert call(account, "POST", f"{ORDERS}/{order_id}/renew", "limited requester",
                {"csr": csr}).status_code == 201


def test_a_renewal_needs_a_csr_for_the_orders_names(account, csr, self_signed, ec_key):
    order_id = stored_issued_order(account, csr, self_signed)
    missing = call(account, "POST", f"{ORDERS}/{order_id}/renew", "admin", {})
    assert missing.status_code == 422 and "csr" in missing.json["errors"]
    other = call(account, "POST", f"{ORDERS}/{order_id}/renew", "admin",
                 {"csr": csr_for(ec_key, "www.example.org")})
    assert other.status_code == 422 and "csr" in other.json["errors"]


def test_only_an_issued_or_expired_order_is_renewed(account, csr):
    order = pending_order(account, csr)
    answer = call(account, "POST", f"{ORDERS}/{order['id']}/renew", "admin", {"csr": csr})
    assert answer.status_code == 409
    assert answer.json["code"] == "invalid_order_state"


def test_the_requester_of_a_renewal_keeps_the_old_orders_unit(account, csr, self_signed):
    """A renewal inherits the unit even when the renewing assignee is not in it."""
    order_id = stored_issued_order(account, csr, self_signed)
    answer = call(account, "POST", f"{ORDERS}/{order_id}/renew", "limited assignee",
                  {"csr": csr})
    assert answer.json["unit"]["id"] == UNIT_A
    assert REQUESTER != answer.json["requester"]["id"]
