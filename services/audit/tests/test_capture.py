"""Every message on the bus becomes exactly one entry, with who, when, where and what."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from chancery_audit import handlers
from chancery_audit.handlers import NOT_RECORDED
from chancery_audit.model import AuditEntry, AuditLog
from chancery_shared.messaging import broker, contracts, topology
from chancery_shared.messaging.envelope import Actor, Context, new_envelope
from chancery_shared.testing import wait_for
from kombu import Producer
from sqlalchemy import func, select

ACCOUNT = "acct-" + "a" * 31  # the conftest's default account
OTHER_ACCOUNT = "acct-" + "b" * 31
ORDER = "0f5c6b1e-7e4b-4a55-9d0a-3f0c8c2b9a11"
UNIT = "unit-engineering"
DOMAIN = {"domain_id": "dom-1", "name": "example.com", "method": "dns-txt",
          "validated_until": None}
ORGANIZATION = {"organization_id": "org-1", "name": "Example Holdings LLC", "country": "US",
                "state_or_province": "California", "locality": "San Francisco",
                "validated_until": None}
USER = {"user_id": "user-bob", "email": "bob@example.com", "name": "Bob Roe", "role": "limited",
        "unit_ids": [UNIT]}
FUNDS = {"order_id": ORDER, "amount_cents": 12900, "available_cents": 100}
DEPOSIT = {"deposit_id": "dep-1", "method": "card", "amount_cents": 50000}

# One sample per message type: (subject type, subject id, payload). Adding a message
# type to the catalogue without a sample here fails test_every_message_type_is_recorded.
SAMPLES: dict[str, tuple[str, str, dict]] = {
    "audit.checkpoint.signed": ("audit_log", f"account:{ACCOUNT}", {
        "log_key": f"account:{ACCOUNT}", "sequence": 12, "head_hash": "ab" * 32,
        "signed_at": "2026-11-26T00:00:00Z", "key_id": "k" * 32,
        "public_key": "A" * 43 + "=", "signature": "B" * 86 + "=="}),
    "audit.log.purged": ("audit_log", f"account:{ACCOUNT}", {
        "log_key": f"account:{ACCOUNT}", "before": "2024-11-26T00:00:00Z", "entries": 40,
        "first_sequence": 1, "through_sequence": 40}),
    "identity.account.created": ("account", ACCOUNT, {"name": "Example Corp"}),
    "identity.user.created": ("user", "user-bob", USER),
    "identity.user.updated": ("user", "user-bob", {**USER, "role": "unit_admin"}),
    "identity.user.deactivated": ("user", "user-bob", {**USER, "active": False}),
    "identity.unit.created": ("unit", UNIT, {"unit_id": UNIT, "name": "Engineering"}),
    "identity.unit.updated": ("unit", UNIT, {"unit_id": UNIT, "name": "R&D"}),
    "identity.session.created": ("user", "user-bob",
                                 {"user_id": "user-bob", "email": "bob@example.com",
                                  "method": "password"}),
    "identity.login.failed": ("user", "bob@example.com",
                              {"user_id": None, "email": "bob@example.com", "method": "password",
                               "reason": "bad credentials"}),
    "identity.session.ended": ("user", "user-bob",
                               {"user_id": "user-bob", "email": "bob@example.com",
                                "method": "logout", "reason": "logout", "session_id": "ses-1"}),
    "identity.user.password_changed": ("user", "user-bob",
                                       {"user_id": "user-bob", "email": "bob@example.com",
                                        "unit_ids": [UNIT], "sessions_ended": 1}),
    "identity.user.unlocked": ("user", "user-bob",
                               {"user_id": "user-bob", "email": "bob@example.com",
                                "unit_ids": [UNIT]}),
    "identity.signing_key.rotated": ("signing_key", "kid-2",
                                     {"kid": "kid-2", "previous_kid": "kid-1",
                                      "activates_at": "2026-11-26T00:05:00Z"}),
    "identity.api_key.created": ("api_key", "key-1", {"key_id": "key-1", "name": "CI"}),
    "identity.api_key.revoked": ("api_key", "key-1", {"key_id": "key-1", "name": "CI"}),
    "orders.domain.submitted": ("domain", "dom-1", DOMAIN),
    "orders.domain.validated": ("domain", "dom-1",
                                {**DOMAIN, "validated_until": "2027-11-26T00:00:00Z"}),
    "orders.domain.failed": ("domain", "dom-1", DOMAIN),
    "orders.domain.expired": ("domain", "dom-1", DOMAIN),
    "orders.organization.submitted": ("organization", "org-1", ORGANIZATION),
    "orders.organization.validated": ("organization", "org-1", {
        **ORGANIZATION, "validated_until": "2027-06-14T00:00:00Z", "note": "state registry"}),
    "orders.order.submitted": ("order", ORDER, {
        "order_id": ORDER, "status": "pending_approval", "product": "ssl_basic",
        "term_years": 1, "server_type": "nginx", "common_name": "www.example.com",
        "sans": ["www.example.com"], "unit_id": UNIT, "requester_id": "user-bob",
        "price_cents": 12900}),
    "orders.order.edited": ("order", ORDER, {"order_id": ORDER,
                                             "changes": {"term_years": [1, 2]}}),
    "orders.order.approved": ("order", ORDER, {"order_id": ORDER, "price_cents": 12900,
                                               "unit_id": UNIT, "product": "ssl_basic"}),
    "orders.order.rejected": ("order", ORDER, {"order_id": ORDER, "reason": "not ours"}),
    "orders.order.cancelled": ("order", ORDER, {"order_id": ORDER, "reason": None}),
    "orders.order.issued": ("order", ORDER, {"order_id": ORDER, "serial": "0a1b2c"}),
    "orders.order.failed": ("order", ORDER, {"order_id": ORDER, "reason": "lint failed"}),
    "orders.order.awaiting_validation": ("order", ORDER, {
        "order_id": ORDER, "reason": "no validation of the account can back www.example.com",
        "names": ["www.example.com"], "organization": False}),
    "orders.order.validation_needed": ("order", ORDER, {
        "order_id": ORDER, "names": ["www.example.com"], "domains": ["example.com"],
        "reissue_at": "2027-05-01T00:00:00Z", "serial": "0a1b2c"}),
    "orders.order.awaiting_funds": ("order", ORDER, {"order_id": ORDER, "price_cents": 12900,
                                                     "available_cents": 100}),
    "orders.order.assignees_changed": ("order", ORDER, {"order_id": ORDER,
                                                        "user_ids": ["user-bob"]}),
    "orders.order.reissue_requested": ("order", ORDER, {
        "order_id": ORDER, "issuance_id": "iss-2", "sans": ["www.example.com"],
        "revoke_previous": True, "automatic": False}),
    "orders.order.reissued": ("order", ORDER, {
        "order_id": ORDER, "issuance_id": "iss-2", "serial": "0d0e0f",
        "previous_serial": "0a1b2c", "automatic": False}),
    "orders.order.reissue_failed": ("order", ORDER, {
        "order_id": ORDER, "issuance_id": "iss-2", "reason": "weak key"}),
    "orders.order.revoked": ("order", ORDER, {"order_id": ORDER, "reason": "key_compromise",
                                              "serials": ["0a1b2c"]}),
    "orders.order.refunded": ("order", ORDER, {"order_id": ORDER, "amount_cents": 12900,
                                               "note": "bought twice"}),
    "orders.order.expired": ("order", ORDER, {"order_id": ORDER, "serial": "0a1b2c"}),
    "orders.renewal.notice_sent": ("order", ORDER, {"order_id": ORDER, "days_left": 30,
                                                    "recipients": ["bob@example.com"]}),
    "orders.renewal.settings_changed": ("order", ORDER, {
        "scope": "order", "order_id": ORDER, "days_before": [30, 7], "emails": None,
        "enabled": True}),
    "ca_signer.certificate.sign": ("issuance", "iss-1", {
        "order_id": ORDER, "issuance_id": "iss-1", "profile": "dv",
        "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\n...",
        "subject": {"common_name": "www.example.com"}, "sans": ["www.example.com"],
        "not_after": None}),
    "ca_signer.certificate.revoke": ("certificate", "0a1b2c",
                                     {"serial": "0a1b2c", "reason": "key_compromise"}),
    "ca_signer.certificate.issued": ("certificate", "0a1b2c", {
        "order_id": ORDER, "issuance_id": "iss-1", "serial": "0a1b2c", "issuer_id": "ica-1",
        "not_before": "2026-11-26T00:00:00Z", "not_after": "2027-11-26T00:00:00Z",
        "sans": ["www.example.com"], "certificate_pem": "-----BEGIN CERTIFICATE-----\n...",
        "chain_pem": "-----BEGIN CERTIFICATE-----\n..."}),
    "ca_signer.certificate.rejected": ("issuance", "iss-1", {
        "order_id": ORDER, "issuance_id": "iss-1", "reason": "weak key",
        "lint_findings": [{"code": "e_rsa_mod_less_than_2048_bits"}]}),
    "ca_signer.certificate.revoked": ("certificate", "0a1b2c", {
        "serial": "0a1b2c", "reason": "key_compromise", "revoked_at": "2026-11-26T00:00:00Z"}),
    "ca_signer.crl.published": ("issuer", "ica-1", {"issuer_id": "ica-1", "number": 7,
                                                    "entries": 3}),
    "ca_signer.key.blocked": ("key", "ab" * 32, {
        "spki_sha256": "ab" * 32, "reason": "key_compromise", "source": "revocation",
        "serial": "0a1b2c"}),
    "ca_signer.problem.reported": ("problem_report", "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6", {
        "report_id": "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6", "kind": "key_compromise",
        "status": "resolved", "serial": None, "spki_sha256": "ab" * 32,
        "revoked_serials": ["0a1b2c"]}),
    "ca_signer.issuer.created": ("issuer", "ica-1", {
        "issuer_id": "ica-1", "kind": "issuing", "parent_id": "root-1", "hierarchy": "public",
        "subject": "CN=Example TLS ECC Issuing CA,O=Example,C=US", "key_type": "ec-p256",
        "key_backend": "pkcs11", "not_before": "2026-11-26T00:00:00Z",
        "not_after": "2031-11-25T23:59:59Z"}),
    "ca_signer.issuer.retired": ("issuer", "ica-1", {
        "issuer_id": "ica-1", "replaced_by": "ica-2", "profiles": ["dv"]}),
    "ca_signer.issuer.revoked": ("issuer", "ica-1", {
        "issuer_id": "ica-1", "reason": "key_compromise", "revoked_at": "2026-11-26T00:00:00Z"}),
    "ca_signer.profile.assigned": ("issuer", "ica-2", {
        "profile": "ev", "issuer_id": "ica-2", "previous_issuer_id": None}),
    "ca_signer.ocsp_responder.created": ("issuer", "ica-2", {
        "issuer_id": "ica-2", "responder_id": "resp-1", "not_after": "2026-12-26T00:00:00Z"}),
    "ledger.deposit.settled": ("deposit", "dep-1", DEPOSIT),
    "ledger.deposit.declined": ("deposit", "dep-1", DEPOSIT),
    "ledger.deposit.pending": ("deposit", "dep-1", {**DEPOSIT, "method": "purchase_order"}),
    "ledger.funds.reserved": ("order", ORDER, FUNDS),
    "ledger.funds.declined": ("order", ORDER, FUNDS),
    "ledger.funds.captured": ("order", ORDER, FUNDS),
    "ledger.funds.released": ("order", ORDER, FUNDS),
    "ledger.funds.withdrawn": ("order", ORDER, FUNDS),
    "ledger.funds.refunded": ("order", ORDER, FUNDS),
    "ledger.balance.low": ("account", ACCOUNT, {"available_cents": 100,
                                                "threshold_cents": 5000}),
    "ledger.unit_funds.allocated": ("unit", "unit-1", {
        "unit_id": "unit-1", "amount_cents": 5000, "unit_available_cents": 5000,
        "available_cents": 1000}),
    "ledger.unit_funds.returned": ("unit", "unit-1", {
        "unit_id": "unit-1", "amount_cents": 2000, "unit_available_cents": 3000,
        "available_cents": 3000}),
    "ledger.settings.low_balance_changed": ("account", ACCOUNT, {"threshold_cents": 5000,
                                                                 "enabled": True}),
}


def entries(audit, *conditions) -> list[AuditEntry]:
    with audit.uow() as uow:
        found = list(uow.session.execute(
            select(AuditEntry).where(*conditions).order_by(AuditEntry.sequence)).scalars())
    return found


def count(audit) -> int:
    with audit.uow() as uow:
        return uow.session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()


def test_the_sample_table_covers_exactly_the_catalogue():
    known = set(contracts.known_types())
    assert not known - set(SAMPLES), "add a sample payload for these message types"
    assert not set(SAMPLES) - known, "these samples are of message types no longer known"


@pytest.mark.parametrize("type_", contracts.known_types())
def test_every_message_type_is_recorded(type_, consumer, audit):
    if type_ not in SAMPLES:
        pytest.fail(f"no sample payload for {type_}: add one to SAMPLES")
    subject_type, subject_id, data = SAMPLES[type_]
    source = type_.split(".")[0]
    envelope = new_envelope(
        type=type_, source=source, subject_type=subject_type, subject_id=subject_id,
        context=Context(actor=Actor(user_id="user-alice", user_name="Alice Ng", ip="203.0.113.7"),
                        account_id=ACCOUNT),
        summary=f"Alice Ng caused {type_}", data=data, correlation_id=ORDER)

    assert consumer.handle(envelope) is True

    if type_ in NOT_RECORDED:  # a statement about the log, kept as a checkpoint instead
        assert entries(audit, AuditEntry.event_id == envelope.event_id) == []
        return
    [entry] = entries(audit, AuditEntry.event_id == envelope.event_id)
    assert entry.action == type_
    assert entry.description == f"Alice Ng caused {type_}"
    assert (entry.service, entry.account_id, entry.correlation_id) == (source, ACCOUNT, ORDER)
    assert (entry.user_id, entry.user_name, entry.ip) == ("user-alice", "Alice Ng", "203.0.113.7")
    assert (entry.subject_type, entry.subject_id) == (subject_type, subject_id)
    assert entry.target == f"{subject_type}:{subject_id}"
    assert json.loads(entry.envelope) == json.loads(envelope.to_json())


def test_an_automatic_step_is_recorded_under_the_service_that_took_it(record, audit):
    envelope = record("ledger.funds.reserved", system="ledger", source="ledger",
                      data={"order_id": ORDER, "amount_cents": 100, "available_cents": 0})

    [entry] = entries(audit, AuditEntry.event_id == envelope.event_id)
    assert (entry.user_id, entry.user_name, entry.ip) == (None, "ledger", None)


def test_the_entry_is_dated_when_it_happened_not_when_it_was_recorded(record, audit):
    from datetime import UTC, datetime

    happened = datetime(2026, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
    envelope = record(at=happened)

    [entry] = entries(audit, AuditEntry.event_id == envelope.event_id)
    assert entry.at.replace(tzinfo=UTC) == happened
    assert entry.recorded_at.replace(tzinfo=UTC) > happened


def test_a_redelivered_message_leaves_one_entry(record, consumer, audit):
    envelope = record()

    assert consumer.handle(envelope) is False
    assert count(audit) == 1


def test_the_same_message_by_another_path_leaves_one_entry(record, audit):
    """A dead letter replayed after it was recorded passes the inbox of another queue."""
    envelope = record()

    with audit.uow() as uow:
        assert handlers.record_entry(uow, envelope) is None
        uow.commit()
    assert count(audit) == 1


def test_each_account_and_the_platform_keep_their_own_numbered_log(record, audit):
    for account in (ACCOUNT, OTHER_ACCOUNT, ACCOUNT, None, ACCOUNT, None):
        record(account_id=account)

    def positions(account):
        return [e.sequence for e in entries(audit, AuditEntry.account_id.is_(None)
                                            if account is None
                                            else AuditEntry.account_id == account)]

    assert positions(ACCOUNT) == [1, 2, 3]
    assert positions(OTHER_ACCOUNT) == [1]
    assert positions(None) == [1, 2]
    with audit.uow() as uow:
        heads = dict(uow.session.execute(select(AuditLog.key, AuditLog.last_sequence)).all())
    assert sorted(heads.values()) == [1, 2, 3]


@pytest.mark.parametrize(("data_units", "expected"), [
    ({"unit_id": "u1"}, ["u1"]),
    ({"unit_id": None}, []),
    ({"unit_ids": ["u2", "u1"]}, ["u1", "u2"]),
    ({"changes": {"unit_id": ["u1", "u3"], "term_years": [1, 2]}}, ["u1", "u3"]),
    ({"changes": {"unit_ids": [["u1"], ["u4", "u5"]]}}, ["u1", "u4", "u5"]),  # a user moved
    ({}, []),
])
def test_the_units_a_message_names_are_kept_with_its_entry(data_units, expected, record, audit):
    envelope = record("orders.order.edited", data={"order_id": ORDER, "changes": {},
                                                   **data_units})

    [entry] = entries(audit, AuditEntry.event_id == envelope.event_id)
    assert entry.unit_ids == expected


def test_later_steps_of_an_order_concern_the_unit_the_order_named(record, audit):
    order = str(uuid.uuid4())
    record("orders.order.approved", correlation_id=order,
           data={"order_id": order, "price_cents": 100, "unit_id": "u1"})
    reserved = record("ledger.funds.reserved", system="ledger", correlation_id=order,
                      data={"order_id": order, "amount_cents": 100, "available_cents": 0})
    elsewhere = record("ledger.funds.reserved", system="ledger", correlation_id=order,
                       account_id=OTHER_ACCOUNT,
                       data={"order_id": order, "amount_cents": 100, "available_cents": 0})

    [entry] = entries(audit, AuditEntry.event_id == reserved.event_id)
    assert entry.unit_ids == ["u1"]
    [foreign] = entries(audit, AuditEntry.event_id == elsewhere.event_id)
    assert foreign.unit_ids == []  # another account's flow never borrows this one's units


def test_a_message_published_on_the_bus_reaches_the_log(audit):
    """The real consumer, on the in-memory broker: the '#' binding and handler key work."""
    envelope = new_envelope(
        type="ledger.balance.low", source="ledger", subject_type="account", subject_id=ACCOUNT,
        context=Context(actor=Actor.service("ledger"), account_id=ACCOUNT),
        summary="ledger warned that the balance is low",
        data={"available_cents": 100, "threshold_cents": 5000})
    with broker.connect("memory://") as connection:
        channel = connection.channel()
        topology.declare(channel)
        Producer(channel).publish(envelope.to_json(), exchange=topology.EVENTS_EXCHANGE,
                                  routing_key=envelope.type, message_id=envelope.event_id,
                                  content_type="application/json", content_encoding="utf-8")
    [consumer] = audit.consumers(prefetch=1)
    stop = threading.Event()
    worker = threading.Thread(target=consumer.run_until, args=(stop,), daemon=True)
    worker.start()
    try:
        wait_for(lambda: entries(audit, AuditEntry.event_id == envelope.event_id),
                 timeout=10, message="the entry of the published message")
    finally:
        stop.set()
        worker.join(timeout=5)
