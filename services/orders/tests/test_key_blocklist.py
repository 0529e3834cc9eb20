"""Keys that must never be certified are refused when the request is placed.

The key policy (chancery_shared.subscriber_keys) runs here as it does in ca-signer:
RSA keys whose primes are close enough for Fermat's method or that ROCA factors, and
keys on the blocklist of compromised keys, which orders keeps from
``ca_signer.key.blocked``. The answer is a 422 ``key_blocked`` naming the rule, and
nothing is created, so nothing is charged.
"""

from __future__ import annotations

import dataclasses

import pytest
from chancery_orders.model import BlockedKey, Order
from chancery_shared.subscriber_keys import spki_sha256
from chancery_shared.weak_keys import fermat_weak_key, roca_weak_key
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from .conftest import ACCOUNT, OTHER_ACCOUNT, csr_pem

ORDERS = "/api/orders/v1/orders"


def orders_in_database(harness) -> int:
    with harness.service.session_factory() as session:
        return session.execute(select(func.count()).select_from(Order)).scalar_one()


def refused(harness, body, account_id=ACCOUNT):
    before = orders_in_database(harness)
    response = harness.client.post(ORDERS, json=body,
                                   headers=harness.headers("admin", account_id=account_id))
    assert orders_in_database(harness) == before  # nothing written, nothing to charge
    return response


@pytest.mark.parametrize(("make_key", "rule", "words"), [
    (fermat_weak_key, "rsa_fermat", "Fermat"),
    (roca_weak_key, "rsa_roca", "ROCA"),
])
def test_a_weak_rsa_key_is_refused_at_order_time(harness, order_body, make_key, rule, words):
    harness.validate_domain("example.com")
    response = refused(harness, order_body(csr=csr_pem(make_key())))
    assert response.status_code == 422, response.json
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "key_blocked"
    assert response.json["rule"] == rule
    assert words in response.json["errors"]["csr"][0]


def block(harness, key, serial="0badc0de"):
    handled, _ = harness.deliver("ca_signer.key.blocked", {
        "spki_sha256": spki_sha256(key.public_key()), "reason": "key_compromise",
        "source": "revocation", "serial": serial}, source="ca-signer", account_id=OTHER_ACCOUNT)
    assert handled


def test_a_key_blocked_in_another_account_is_refused_here(harness, order_body):
    harness.validate_domain("example.com")
    key = ec.generate_private_key(ec.SECP256R1())
    ok = harness.client.post(ORDERS, json=order_body(csr=csr_pem(key)),
                             headers=harness.headers("admin"))
    assert ok.status_code == 201, ok.json  # before the report, the key is fine

    block(harness, key)  # revoked for key compromise in another account

    response = refused(harness, order_body(csr=csr_pem(key)))
    assert response.status_code == 422, response.json
    assert (response.json["code"], response.json["rule"]) == ("key_blocked", "compromised")
    assert "compromised" in response.json["errors"]["csr"][0]
    other = ec.generate_private_key(ec.SECP256R1())
    assert harness.client.post(ORDERS, json=order_body(csr=csr_pem(other)),
                               headers=harness.headers("admin")).status_code == 201


def test_the_blocklist_message_is_applied_once(harness):
    key = ec.generate_private_key(ec.SECP256R1())
    block(harness, key)
    block(harness, key, serial="another")  # a second report of the same key: no error
    with harness.service.session_factory() as session:
        rows = session.execute(select(BlockedKey)).scalars().all()
    assert [row.spki_sha256 for row in rows] == [spki_sha256(key.public_key())]


def test_a_reissue_with_a_blocked_key_is_refused(harness, csr, self_signed):
    from .lifecycle_support import call, issued_order

    order = issued_order(harness, csr, self_signed)
    key = ec.generate_private_key(ec.SECP256R1())
    block(harness, key)
    response = call(harness, "POST", f"{ORDERS}/{order['id']}/reissue", "admin",
                    {"csr": csr_pem(key)})
    assert response.status_code == 422, response.json
    assert (response.json["code"], response.json["rule"]) == ("key_blocked", "compromised")
    assert harness.outbox("ca_signer.certificate.sign")[-1]["data"]["order_id"] == order["id"]
    assert len(harness.outbox("ca_signer.certificate.sign")) == 1  # only the first issuance


@pytest.mark.parametrize(("curve", "accepted"), [
    (ec.SECP256R1, True), (ec.SECP384R1, True), (ec.SECP521R1, False)])
def test_p521_is_not_offered_by_default(harness, order_body, curve, accepted):
    """Mozilla's policy accepts P-256 and P-384 subscriber keys only
    (CHANCERY_SUBSCRIBER_EC_CURVES widens it)."""
    answer = harness.client.post(ORDERS, json=order_body(csr=csr_pem(ec.generate_private_key(
        curve()))), headers=harness.headers("admin"))
    if accepted:
        assert answer.status_code == 201, answer.json
        return
    assert answer.status_code == 422
    assert answer.json["code"] == "validation_failed"  # not offered, not a weak key
    assert "P-521 is not allowed; use P-256, P-384" in answer.json["errors"]["csr"][0]


def test_the_curves_on_offer_are_configurable(tmp_path, migrated_database, harness_dns,
                                              order_body):
    from .conftest import _harness

    harness = _harness(tmp_path, migrated_database, harness_dns)
    harness.service.platform = dataclasses.replace(harness.service.platform,
                                                   subscriber_curves=("P-256", "P-521"))
    key = ec.generate_private_key(ec.SECP521R1())
    answer = harness.client.post(ORDERS, json=order_body(csr=csr_pem(key)),
                                 headers=harness.headers("admin"))
    assert answer.status_code == 201, answer.json
    harness.service.dispose()


def test_a_debian_weak_key_is_refused_when_the_lists_are_installed(harness, order_body,
                                                                   rsa_key, tmp_path):
    from chancery_shared.subscriber_keys import debian_fingerprint, load_debian_weak_keys

    harness.validate_domain("example.com")
    folder = tmp_path / "openssl-blacklist"
    folder.mkdir()
    (folder / "blacklist.RSA-2048").write_text(
        "# test list\n" + debian_fingerprint(rsa_key.public_key().public_numbers().n) + "\n")
    harness.service.platform = dataclasses.replace(
        harness.service.platform, debian_weak_keys=load_debian_weak_keys(str(folder)))

    response = refused(harness, order_body(csr=csr_pem(rsa_key)))

    assert response.status_code == 422, response.json
    assert (response.json["code"], response.json["rule"]) == ("key_blocked", "debian_weak")
    assert "CVE-2008-0166" in response.json["errors"]["csr"][0]
    fine = ec.generate_private_key(ec.SECP256R1())
    assert harness.client.post(ORDERS, json=order_body(csr=csr_pem(fine)),
                               headers=harness.headers("admin")).status_code == 201
